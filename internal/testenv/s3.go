package testenv

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// VersityGWModule is the S3 gateway the tests run, at the version
// scripts/deps.sh installs.
const VersityGWModule = "github.com/versity/versitygw/cmd/versitygw@v1.8.0"

const s3Install = "run scripts/deps.sh, or GOBIN=$(go env GOPATH)/bin go install " + VersityGWModule +
	", or set LIFEBOAT_VERSITYGW to the binary"

// S3Region is the region the test S3 server signs and answers for.
const S3Region = "us-east-1"

// S3Server is a real S3-compatible server: versitygw with its POSIX
// backend, on a free loopback port, with one root access key.
type S3Server struct {
	// Endpoint is the server's base URL, http://127.0.0.1:<port>.
	Endpoint string
	// AccessKey and SecretKey are the root user's credentials.
	AccessKey string
	SecretKey string
	// Dir is the POSIX backend's root: each bucket is a directory in it and
	// each object a file below that.
	Dir string

	bin     string
	args    []string
	account runAs
	log     string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// versityGWBinary finds versitygw: $LIFEBOAT_VERSITYGW, then $GOBIN, each
// $GOPATH/bin, ~/go/bin, then PATH.
func versityGWBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("LIFEBOAT_VERSITYGW"); p != "" {
		return lookBinary(t, filepath.Base(p), s3Install, filepath.Dir(p))
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range filepath.SplitList(os.Getenv("GOPATH")) {
		if d != "" {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	return lookBinary(t, "versitygw", s3Install, dirs...)
}

// reachable returns bin, or a copy of it that the account can run: a
// binary under /root (go install's default when the tests run as root)
// is out of reach of the unprivileged account. The copy is kept in the
// temporary directory for the next tests.
func (a runAs) reachable(t testing.TB, bin string) string {
	t.Helper()
	if !a.root {
		return bin
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.command(ctx, nil, bin, "--version").Run(); err == nil {
		return bin
	}
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("lifeboat-testenv-bin-%d-%d", st.Size(), st.ModTime().UnixNano()))
	dst := filepath.Join(dir, filepath.Base(bin))
	if st2, err := os.Stat(dst); err == nil && st2.Size() == st.Size() {
		return dst
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	tmp, err := os.CreateTemp(dir, ".copy-*")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o755)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		t.Fatalf("testenv: copy %s where %s can run it: %v", bin, a.name, err)
	}
	return dst
}

// StartS3 starts versitygw (as an unprivileged account when the tests run
// as root, like the other servers) and waits until it answers. It is
// killed and its data removed when the test ends.
func StartS3(t testing.TB) *S3Server {
	t.Helper()
	acct := serverAccount(t)
	bin := acct.reachable(t, versityGWBinary(t))
	root := acct.tempDir(t, "lifeboat-s3-")
	data := filepath.Join(root, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if acct.root {
		if err := os.Chown(data, int(acct.uid), int(acct.gid)); err != nil {
			t.Fatal(err)
		}
	}
	port := FreePort(t)
	s := &S3Server{
		Endpoint:  fmt.Sprintf("http://127.0.0.1:%d", port),
		AccessKey: "LB" + strings.ToUpper(randomToken()[:18]),
		SecretKey: randomToken() + randomToken(),
		Dir:       data,
		bin:       bin,
		account:   acct,
		log:       filepath.Join(root, "versitygw.log"),
	}
	s.args = []string{
		"--port", fmt.Sprintf("127.0.0.1:%d", port),
		"--region", S3Region,
		"--health", "/health",
		"--quiet",
		"posix", data,
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testenv: last lines of versitygw's log:\n%s", tail(s.log, 4000))
		}
	})
	t.Cleanup(s.kill)
	s.Start(t)
	return s
}

// Start starts the server (again) and waits until its health endpoint
// answers.
func (s *S3Server) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	if s.cmd != nil {
		s.mu.Unlock()
		t.Fatal("testenv: versitygw is already running")
	}
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.mu.Unlock()
		t.Fatalf("testenv: versitygw log: %v", err)
	}
	// The credentials go through the environment, not the command line
	// that ps shows.
	cmd := s.account.command(context.Background(), []string{
		"ROOT_ACCESS_KEY_ID=" + s.AccessKey,
		"ROOT_SECRET_ACCESS_KEY=" + s.SecretKey,
	}, s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		s.mu.Unlock()
		t.Fatalf("testenv: start versitygw: %v", err)
	}
	logf.Close()
	s.cmd = cmd
	s.done = make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(s.done)
	done := s.done
	s.mu.Unlock()

	hc := &http.Client{Timeout: time.Second}
	waitFor(t, "versitygw", 20*time.Second, func() error {
		select {
		case <-done:
			return fmt.Errorf("versitygw exited: %s", tail(s.log, 2000))
		default:
		}
		resp, err := hc.Get(s.Endpoint + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("health: %s", resp.Status)
		}
		return nil
	})
	hc.CloseIdleConnections()
}

// Kill stops the server at once (SIGKILL), as a crash would.
func (s *S3Server) Kill(t testing.TB) {
	t.Helper()
	s.kill()
}

func (s *S3Server) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

// URL is the gocloud.dev/blob URL of a bucket on this server: path-style
// addressing, this server's endpoint and region. Credentials are not in
// it: they come from the environment (see SetEnv).
func (s *S3Server) URL(bucket string) string {
	q := url.Values{}
	q.Set("endpoint", s.Endpoint)
	q.Set("region", S3Region)
	q.Set("use_path_style", "true")
	return "s3://" + bucket + "?" + q.Encode()
}

// SetEnv points the AWS SDK's default credential chain at this server's
// root user for the rest of the test (t.Setenv: not for parallel tests),
// and keeps it off shared config files and the EC2 metadata service.
func (s *S3Server) SetEnv(t testing.TB) {
	t.Helper()
	SetAWSEnv(t, s.AccessKey, s.SecretKey)
}

// SetAWSEnv sets the AWS SDK's credentials in the environment for the rest
// of the test; empty keys leave the SDK without credentials. Shared config
// files and the EC2 metadata service are turned off so that nothing is
// looked up outside the test.
func SetAWSEnv(t testing.TB, accessKey, secretKey string) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", accessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secretKey)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", S3Region)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "")
	if accessKey == "" {
		os.Unsetenv("AWS_ACCESS_KEY_ID")
		os.Unsetenv("AWS_SECRET_ACCESS_KEY")
	}
}

// Client returns an S3 client of this server with the root credentials.
func (s *S3Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       S3Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
}

// CreateBucket creates a bucket and returns its URL.
func (s *S3Server) CreateBucket(t testing.TB, bucket string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("testenv: create bucket %s: %v", bucket, err)
	}
	return s.URL(bucket)
}

// ObjectPath is the backend file of an object, for tests that break one
// object on purpose (chmod 000 makes the server fail to read it).
func (s *S3Server) ObjectPath(bucket, key string) string {
	return filepath.Join(s.Dir, bucket, filepath.FromSlash(key))
}

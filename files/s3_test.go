package files

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// bucketTree reads every object of a bucket (Lifeboat's own excluded).
func bucketTree(t testing.TB, url string) map[string]string {
	t.Helper()
	ctx := context.Background()
	st, err := openStore(ctx, url, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	l, err := st.list(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, o := range l.objects {
		b, err := st.bucket.ReadAll(ctx, o.Key)
		if err != nil {
			t.Fatalf("read %q: %v", o.Key, err)
		}
		out[o.Key] = string(b)
	}
	return out
}

func sameObjects(t testing.TB, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%q missing", k)
		} else if g != v {
			t.Errorf("%q: %d bytes, want %d", k, len(g), len(v))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%q not wanted", k)
		}
	}
}

// TestSyncS3 syncs a directory to a bucket of a real S3 server
// (versitygw) and a bucket to a directory: initial copy (odd names, an
// object large enough for a multipart upload), incremental, deletions.
func TestSyncS3(t *testing.T) {
	srv := testenv.StartS3(t)
	srv.SetEnv(t)
	bucket := srv.CreateBucket(t, "share-west")
	src, back := t.TempDir(), t.TempDir()
	files := map[string]string{
		"plain.txt":     "plain",
		"nested/a/b.md": "# nested",
		"large.bin":     strings.Repeat("0123456789abcdef", 20<<16), // 20 MiB
		"empty":         "",
	}
	for i, k := range oddNames {
		files[k] = fmt.Sprintf("odd %d", i)
	}
	for k, v := range files {
		writeFile(t, src, k, v)
	}

	// file:// → s3://
	up := openSync(t, fileURL(src), bucket, Options{Delete: true})
	rep := syncOnce(t, up)
	if rep.Copied != len(files) || len(rep.Failed) > 0 {
		t.Fatalf("up, initial: %+v", rep)
	}
	sameObjects(t, bucketTree(t, bucket), files)
	if got := countsOf(syncOnce(t, up)); got != (counts{Unchanged: len(files)}) {
		t.Errorf("up, nothing changed: %+v", got)
	}
	files["plain.txt"] = "plain, changed"
	writeFile(t, src, "plain.txt", files["plain.txt"])
	os.Remove(src + "/nested/a/b.md")
	delete(files, "nested/a/b.md")
	if got := countsOf(syncOnce(t, up)); got != (counts{Copied: 1, Deleted: 1, Unchanged: len(files) - 1}) {
		t.Errorf("up, incremental: %+v", got)
	}
	sameObjects(t, bucketTree(t, bucket), files)

	// s3:// → file://
	down := openSync(t, bucket, fileURL(back), Options{Delete: true})
	rep = syncOnce(t, down)
	if rep.Copied != len(files) || len(rep.Failed) > 0 {
		t.Fatalf("down, initial: %+v", rep)
	}
	sameTree(t, back, files)
	noSidecars(t, back)
	if got := countsOf(syncOnce(t, down)); got != (counts{Unchanged: len(files)}) {
		t.Errorf("down, nothing changed: %+v", got)
	}
	// Changed and deleted in the bucket.
	b, err := blob.OpenBucket(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	files["empty"] = "not empty any more"
	if err := b.WriteAll(context.Background(), "empty", []byte(files["empty"]), nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(context.Background(), "large.bin"); err != nil {
		t.Fatal(err)
	}
	delete(files, "large.bin")
	if got := countsOf(syncOnce(t, down)); got != (counts{Copied: 1, Deleted: 1, Unchanged: len(files) - 1}) {
		t.Errorf("down, incremental: %+v", got)
	}
	sameTree(t, back, files)
}

// TestSyncS3Errors checks the errors of stores that cannot be used: they
// name the store and never show the secret.
func TestSyncS3Errors(t *testing.T) {
	srv := testenv.StartS3(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv.SetEnv(t)
	srv.CreateBucket(t, "exists")

	check := func(name, url string, want ...string) {
		t.Helper()
		s, err := OpenSyncer(ctx, dir, url, Options{Timeout: 20 * time.Second})
		if err == nil {
			s.Close()
			t.Errorf("%s: no error", name)
			return
		}
		msg := err.Error()
		t.Logf("%s: %s", name, msg)
		for _, w := range append(want, "destination: open s3://") {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: %q does not say %q", name, msg, w)
			}
		}
		if strings.Contains(msg, srv.SecretKey) || strings.Contains(msg, "wrong-secret-value") {
			t.Errorf("%s: the secret is in %q", name, msg)
		}
	}
	check("missing bucket", srv.URL("missing"), "s3://missing", "bucket does not exist")

	testenv.SetAWSEnv(t, srv.AccessKey, "wrong-secret-value")
	check("wrong secret", srv.URL("exists"), "s3://exists", "SignatureDoesNotMatch")

	testenv.SetAWSEnv(t, "LBNOSUCHKEY", "wrong-secret-value")
	check("unknown access key", srv.URL("exists"), "s3://exists", "access key")

	testenv.SetAWSEnv(t, "", "")
	check("no credentials", srv.URL("exists"), "s3://exists", "credentials")

	srv.SetEnv(t)
	closed := fmt.Sprintf("s3://exists?endpoint=http://127.0.0.1:%d&region=us-east-1&use_path_style=true", testenv.FreePort(t))
	check("unreachable endpoint", closed, "connection refused")

	hung := "s3://exists?endpoint=http://" + testenv.Blackhole(t) + "&region=us-east-1&use_path_style=true"
	start := time.Now()
	s, err := OpenSyncer(ctx, dir, hung, Options{Timeout: 500 * time.Millisecond})
	if err == nil {
		s.Close()
		t.Error("hung endpoint: no error")
	} else if !strings.Contains(err.Error(), "deadline exceeded") || time.Since(start) > 10*time.Second {
		t.Errorf("hung endpoint: %v after %s", err, time.Since(start))
	}
}

// TestSyncS3ObjectFailures checks per-object failures on S3 stores: an
// object deleted between the listing and its copy (source side), and a
// key the server refuses because a "directory" of objects is in the way
// (versitygw stores objects as files: "report" cannot be written while
// "report/old.txt" exists). The rest is synced; with Delete the object in
// the way goes and the refused key is copied in the same pass.
func TestSyncS3ObjectFailures(t *testing.T) {
	srv := testenv.StartS3(t)
	srv.SetEnv(t)
	bucket := srv.CreateBucket(t, "share")
	ctx := context.Background()
	b, err := blob.OpenBucket(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	// Source side.
	for _, k := range []string{"a.txt", "b/vanishing.txt", "c.txt"} {
		if err := b.WriteAll(ctx, k, []byte("content of "+k), nil); err != nil {
			t.Fatal(err)
		}
	}
	dst := t.TempDir()
	down := openSync(t, bucket, fileURL(dst), Options{})
	down.beforeCopy = func(key string) {
		if key == "b/vanishing.txt" {
			if err := b.Delete(ctx, key); err != nil {
				t.Error(err)
			}
		}
	}
	rep := syncOnce(t, down)
	if rep.Copied != 2 || len(rep.Failed) != 1 || rep.Failed[0].Key != "b/vanishing.txt" || rep.Failed[0].Op != "read" || rep.PendingObjects != 1 {
		t.Fatalf("object deleted during the pass: %+v", rep)
	}
	t.Logf("vanished object: %s", rep.Failed[0])
	sameTree(t, dst, map[string]string{"a.txt": "content of a.txt", "c.txt": "content of c.txt"})

	// Destination side.
	src := t.TempDir()
	files := map[string]string{"report": "a file named like a directory of the bucket", "ok.txt": "fine"}
	for k, v := range files {
		writeFile(t, src, k, v)
	}
	if err := b.WriteAll(ctx, "report/old.txt", []byte("in the way"), nil); err != nil {
		t.Fatal(err)
	}
	srv.CreateBucket(t, "second")
	second := srv.URL("second")
	b2, err := blob.OpenBucket(ctx, second)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if err := b2.WriteAll(ctx, "report/old.txt", []byte("in the way"), nil); err != nil {
		t.Fatal(err)
	}
	rep = syncOnce(t, openSync(t, fileURL(src), second, Options{}))
	if rep.Copied != 1 || len(rep.Failed) != 1 || rep.Failed[0].Key != "report" || rep.Failed[0].Op != "write" {
		t.Fatalf("key refused by the server: %+v", rep)
	}
	t.Logf("refused key: %s", rep.Failed[0])
	rep = syncOnce(t, openSync(t, fileURL(src), second, Options{Delete: true}))
	if rep.Copied != 1 || rep.Deleted != 1 || len(rep.Failed) != 0 {
		t.Fatalf("with Delete: %+v", rep)
	}
	sameObjects(t, bucketTree(t, second), files)
}

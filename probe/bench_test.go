package probe_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/probe"
)

// BenchmarkDetection measures the time from killing an HTTP endpoint (its
// listener closed and connections reset) to the checker's down verdict,
// with the settings of the issue: interval 500ms, fall 3, timeout 300ms.
// Each iteration is one kill; it reports the median and the worst.
//
//	go test ./probe -run '^$' -bench Detection -benchtime 10x
func BenchmarkDetection(b *testing.B) {
	client := &http.Client{Transport: probe.NewTransport()}
	var took []time.Duration
	for i := 0; i < b.N; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
		go srv.Serve(l)
		h := config.DefaultHealth()
		h.Method, h.Path, h.ExpectStatus = "GET", "/healthz", "200-399"
		p, err := probe.NewHTTP(client, "http://"+l.Addr().String(), h)
		if err != nil {
			b.Fatal(err)
		}
		c, err := health.NewChecker("bench", []health.Target{{
			Service: "web", Region: "east", Prober: p,
			Interval: 500 * time.Millisecond, Timeout: 300 * time.Millisecond, Jitter: 50 * time.Millisecond,
			Fall: 3, Rise: 1,
		}})
		if err != nil {
			b.Fatal(err)
		}
		c.Open()
		waitFor(b, c, health.Up)
		// Kill at a random point of the probe cycle, as a real failure is.
		time.Sleep(time.Duration(i%5) * 100 * time.Millisecond)
		killed := time.Now()
		srv.Close()
		v := waitFor(b, c, health.Down)
		took = append(took, v.Since.Sub(killed))
		c.Close(context.Background())
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(took[len(took)/2].Seconds(), "median-s")
	b.ReportMetric(took[len(took)-1].Seconds(), "max-s")
	b.ReportMetric(0, "ns/op")
}

func waitFor(b *testing.B, c *health.Checker, want health.State) health.Verdict {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if v, _ := c.Verdict("web", "east"); v.State == want {
			return v
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.Fatalf("no %s verdict in 30s", want)
	return health.Verdict{}
}

// farmEnv makes the test binary a farm of HTTP servers (see TestMain).
const farmEnv = "LIFEBOAT_BENCH_FARM"

func TestMain(m *testing.M) {
	if n := os.Getenv(farmEnv); n != "" {
		runFarm(n)
		return
	}
	os.Exit(m.Run())
}

// runFarm listens on n loopback ports, prints them, and serves until its
// standard input closes.
func runFarm(n string) {
	count, _ := strconv.Atoi(n)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	var ports []string
	for i := 0; i < count; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go http.Serve(l, h)
		ports = append(ports, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	fmt.Println(strings.Join(ports, ","))
	bufio.NewReader(os.Stdin).ReadString('\n')
}

// BenchmarkScale probes 1,000 HTTP targets (100 servers × 10 paths, in a
// separate process) at a 1s interval for 20s and reports the probing
// process's CPU use in cores (from getrusage) and its peak RSS.
//
//	go test ./probe -run '^$' -bench Scale -benchtime 1x
func BenchmarkScale(b *testing.B) {
	const servers, paths = 100, 10
	farm := exec.Command(os.Args[0], "-test.run=^$")
	farm.Env = append(os.Environ(), farmEnv+"="+strconv.Itoa(servers))
	stdin, _ := farm.StdinPipe()
	stdout, _ := farm.StdoutPipe()
	farm.Stderr = os.Stderr
	if err := farm.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stdin.Close(); farm.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: probe.NewTransport()}
	h := config.DefaultHealth()
	h.Method, h.ExpectStatus = "GET", "200-399"
	var targets []health.Target
	for _, port := range strings.Split(strings.TrimSpace(line), ",") {
		for p := 0; p < paths; p++ {
			h.Path = fmt.Sprintf("/svc%d/healthz", p)
			pr, err := probe.NewHTTP(client, "http://127.0.0.1:"+port, h)
			if err != nil {
				b.Fatal(err)
			}
			targets = append(targets, health.Target{
				Service: fmt.Sprintf("svc%d", p), Region: "r" + port, Prober: pr,
				Interval: time.Second, Timeout: 500 * time.Millisecond, Jitter: 100 * time.Millisecond, Fall: 3, Rise: 2,
			})
		}
	}
	var probes, failures int64
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	c, err := health.NewChecker("bench", targets, health.WithObserve(func(o health.Observation, _ health.Verdict) {
		<-mu
		probes++
		if !o.OK {
			failures++
		}
		mu <- struct{}{}
	}))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Open()
		time.Sleep(3 * time.Second) // warm up: connections opened
		before := cpuTime()
		start := time.Now()
		time.Sleep(20 * time.Second)
		cores := (cpuTime() - before).Seconds() / time.Since(start).Seconds()
		c.Close(context.Background())
		<-mu
		b.ReportMetric(cores, "cores")
		b.ReportMetric(float64(probes)/23, "probes/s")
		b.ReportMetric(float64(failures), "failures")
		mu <- struct{}{}
	}
	b.ReportMetric(float64(maxRSS())/(1<<20), "peak-rss-MiB")
	b.ReportMetric(0, "ns/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func maxRSS() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Maxrss * 1024 // kilobytes on Linux
}

// Command files is the file-replication benchmark's helper (see
// bench/files.sh):
//
//	files gen -dir D -layout mixed|small -n N
//	    writes N files of deterministic content below D (the same bytes,
//	    names and modification times on every run).
//	files sync -src D -dst D [-concurrency N] [-expect-copied N] [-cpuprofile F] [-memprofile F]
//	    runs one pass of Lifeboat's sync engine (files.OpenSyncer, Sync)
//	    from file://D to file://D and prints one line: wall time of the
//	    pass, the report's counters and the process's peak RSS (VmHWM).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/files"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	// The engine runs inside lifeboat serve, which collects garbage at
	// GOGC=400 unless told otherwise: measure it the same way.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = gen(os.Args[2:])
	case "sync":
		err = syncOnce(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "files:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: files gen -dir D -layout mixed|small -n N | files sync -src D -dst D [-concurrency N] [-expect-copied N] [-cpuprofile F] [-memprofile F]")
	os.Exit(2)
}

// epoch is the modification time of the generated files (plus one second
// per file).
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// gen writes the tree. Layouts:
//
//	mixed: 90% small files of 512 B–32 KiB, 9% of 64–512 KiB, 1% of
//	       2–10 MiB, 100 per directory: ~1 GB for 10,000 files.
//	small: 1 KiB each, 200 per directory.
func gen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	dir := fs.String("dir", "", "directory to fill (created)")
	layout := fs.String("layout", "mixed", "mixed or small")
	n := fs.Int("n", 10000, "number of files")
	fs.Parse(args)
	if *dir == "" || *n <= 0 {
		return fmt.Errorf("gen: -dir and -n are required")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	perDir := 100
	if *layout == "small" {
		perDir = 200
	} else if *layout != "mixed" {
		return fmt.Errorf("gen: unknown layout %q", *layout)
	}
	var total int64
	buf := make([]byte, 10<<20)
	for i := range *n {
		var size int
		switch {
		case *layout == "small":
			size = 1024
		case i%100 == 99: // 1%
			size = 2<<20 + rng.IntN(8<<20)
		case i%100 >= 90: // 9%
			size = 64<<10 + rng.IntN(448<<10)
		default: // 90%
			size = 512 + rng.IntN(32<<10-512)
		}
		c := rand.NewChaCha8([32]byte{byte(i), byte(i >> 8), byte(i >> 16), byte(i >> 24)})
		c.Read(buf[:size])
		p := filepath.Join(*dir, fmt.Sprintf("d%04d", i/perDir), fmt.Sprintf("f%06d.bin", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, buf[:size], 0o644); err != nil {
			return err
		}
		t := epoch.Add(time.Duration(i) * time.Second)
		if err := os.Chtimes(p, t, t); err != nil {
			return err
		}
		total += int64(size)
	}
	fmt.Printf("files=%d bytes=%d\n", *n, total)
	return nil
}

func syncOnce(args []string) error {
	fs := flag.NewFlagSet("sync", flag.ExitOnError)
	src := fs.String("src", "", "source directory")
	dst := fs.String("dst", "", "destination directory")
	conc := fs.Int("concurrency", 0, "Options.Concurrency (0: the default)")
	expect := fs.Int("expect-copied", -1, "fail unless the pass copies this many objects (-1: any)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run here")
	memprofile := fs.String("memprofile", "", "write a profile of the run's allocations here")
	fs.Parse(args)
	if *src == "" || *dst == "" {
		return fmt.Errorf("sync: -src and -dst are required")
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *memprofile != "" {
		runtime.MemProfileRate = 4096
		defer func() {
			if err := writeAllocs(*memprofile); err != nil {
				fmt.Fprintln(os.Stderr, "files: memprofile:", err)
			}
		}()
	}
	ctx := context.Background()
	start := time.Now()
	s, err := files.OpenSyncer(ctx, "file://"+*src, "file://"+*dst, files.Options{Concurrency: *conc})
	if err != nil {
		return err
	}
	defer s.Close()
	rep, err := s.Sync(ctx)
	elapsed := time.Since(start)
	if err != nil {
		return err
	}
	fmt.Printf("elapsed_s=%.3f copied=%d unchanged=%d hashed=%d bytes=%d failed=%d pending=%d vmhwm_kib=%d\n",
		elapsed.Seconds(), rep.Copied, rep.Unchanged, rep.Hashed, rep.BytesCopied, len(rep.Failed), rep.PendingObjects, vmHWM())
	if len(rep.Failed) > 0 {
		return fmt.Errorf("sync: %d objects failed, first: %s", len(rep.Failed), rep.Failed[0])
	}
	if *expect >= 0 && rep.Copied != *expect {
		return fmt.Errorf("sync: copied %d objects, expected %d", rep.Copied, *expect)
	}
	return nil
}

// writeAllocs writes the allocations profile (go tool pprof
// -sample_index=alloc_space).
func writeAllocs(path string) error {
	runtime.GC() // the profile is as of the last collection
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup("allocs").WriteTo(f, 0)
}

// vmHWM is the process's peak resident set size in KiB, from
// /proc/self/status; 0 where that is not readable.
func vmHWM() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			var kib int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kib)
			return kib
		}
	}
	return 0
}

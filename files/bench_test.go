package files

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Benchmarks of file:// → file:// passes, to profile the engine:
//
//	go test ./files -run '^$' -bench 'SyncInitial|SyncNoChange' -benchtime 5x -cpuprofile cpu.out
//	go tool pprof -top files.test cpu.out
//
// bench/files.sh measures the same against rsync and rclone at full
// scale (10,000 files, ~1 GB; 100,000 files).

// benchTree writes n files of deterministic content below dir: with mixed
// sizes, 90% of 512 B–32 KiB, 9% of 64–512 KiB and 1% of 2–10 MiB (as
// bench/files does: ~100 MB per 1,000 files), else 1 KiB each. It returns
// the bytes written.
func benchTree(b *testing.B, dir string, n int, mixed bool) int64 {
	b.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 10<<20)
	var total int64
	for i := range n {
		size := 1024
		if mixed {
			switch {
			case i%100 == 99:
				size = 2<<20 + rng.IntN(8<<20)
			case i%100 >= 90:
				size = 64<<10 + rng.IntN(448<<10)
			default:
				size = 512 + rng.IntN(32<<10-512)
			}
		}
		c := rand.NewChaCha8([32]byte{byte(i), byte(i >> 8), byte(i >> 16), byte(i >> 24)})
		c.Read(buf[:size])
		p := filepath.Join(dir, fmt.Sprintf("d%04d", i/100), fmt.Sprintf("f%06d.bin", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, buf[:size], 0o644); err != nil {
			b.Fatal(err)
		}
		total += int64(size)
	}
	return total
}

// benchPass runs one pass and fails the benchmark unless it copied want
// objects and failed none.
func benchPass(b *testing.B, s *Syncer, want int) Report {
	rep, err := s.Sync(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	if rep.Copied != want || len(rep.Failed) > 0 {
		b.Fatalf("pass copied %d (want %d), failed %v", rep.Copied, want, rep.Failed)
	}
	return rep
}

// BenchmarkSyncInitial copies 1,000 files of mixed sizes (~100 MB) into
// an empty destination, a new one every iteration.
func BenchmarkSyncInitial(b *testing.B) {
	const n = 1000
	root := b.TempDir()
	src := filepath.Join(root, "src")
	size := benchTree(b, src, n, true)
	b.SetBytes(size)
	var i int
	for b.Loop() {
		b.StopTimer()
		dst := filepath.Join(root, fmt.Sprintf("dst%d", i))
		i++
		if err := os.Mkdir(dst, 0o755); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		s, err := OpenSyncer(context.Background(), fileURL(src), fileURL(dst), Options{})
		if err != nil {
			b.Fatal(err)
		}
		benchPass(b, s, n)
		s.Close()
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "files/s")
}

// BenchmarkSyncNoChange re-syncs 20,000 files of 1 KiB that are all up to
// date (after a first copy and a pass that records the destination's
// modification times).
func BenchmarkSyncNoChange(b *testing.B) {
	const n = 20000
	root := b.TempDir()
	src, dst := filepath.Join(root, "src"), filepath.Join(root, "dst")
	benchTree(b, src, n, false)
	if err := os.Mkdir(dst, 0o755); err != nil {
		b.Fatal(err)
	}
	s, err := OpenSyncer(context.Background(), fileURL(src), fileURL(dst), Options{Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchPass(b, s, n)
	benchPass(b, s, 0)
	for b.Loop() {
		if rep := benchPass(b, s, 0); rep.Unchanged != n {
			b.Fatalf("unchanged %d, want %d", rep.Unchanged, n)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "files/s")
}

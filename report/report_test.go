package report

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

var update = flag.Bool("update", false, "rewrite the golden reports")

// recorded is a run as recorded from a lab (lifeboat lab up --sync; the
// drills and runs named by the files): the run, the event stream, the
// status after it, the drill's measurements.
type recorded struct {
	Run    *runbook.Run    `json:"run"`
	Events []control.Event `json:"events"`
	Status *observe.Status `json:"status"`
	Drill  *Drill          `json:"drill"`
	Policy struct {
		RPOSeconds float64 `json:"rpo_seconds"`
		RTOSeconds float64 `json:"rto_seconds"`
	} `json:"policy"`
}

func loadRecorded(t *testing.T, path string) (Input, time.Time) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rec recorded
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	now := rec.Run.FinishedAt.Add(10 * time.Second)
	if rec.Drill != nil && rec.Drill.Scenario == "" {
		rec.Drill = nil
	}
	in := Input{Run: rec.Run, Status: rec.Status, Drill: rec.Drill, Now: now,
		Policy: config.Policy{RPO: config.Duration(rec.Policy.RPOSeconds * float64(time.Second)), RTO: config.Duration(rec.Policy.RTOSeconds * float64(time.Second))}}
	from, to := Window(rec.Run, rec.Drill, now)
	var inWindow []control.Event
	for _, e := range rec.Events {
		if !e.Time.Before(from) && !e.Time.After(to) {
			inWindow = append(inWindow, e)
		}
	}
	in.Events = relevant(inWindow, rec.Run.ID)
	return in, now
}

// TestGolden renders the reports of recorded runs and compares them with
// the golden files (go test ./report -run Golden -update rewrites them).
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.input.json")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no recorded runs in testdata: %v", err)
	}
	for _, path := range inputs {
		name := strings.TrimSuffix(filepath.Base(path), ".input.json")
		t.Run(name, func(t *testing.T) {
			in, now := loadRecorded(t, path)
			rep := New(context.Background(), Build(in), nil, now)
			for _, format := range Formats() {
				var b bytes.Buffer
				if err := Render(&b, rep, format); err != nil {
					t.Fatal(err)
				}
				golden := filepath.Join("testdata", name+"."+format)
				if *update {
					if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run with -update to write it)", err)
				}
				if !bytes.Equal(b.Bytes(), want) {
					t.Errorf("%s differs from the golden file (go test ./report -run Golden -update; then review the diff):\n%s", golden, firstDiff(string(want), b.String()))
				}
			}
		})
	}
}

func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return "line " + itoa(i+1) + ":\n  want " + w + "\n  got  " + g
		}
	}
	return ""
}

func itoa(i int) string { return strconv.Itoa(i) }

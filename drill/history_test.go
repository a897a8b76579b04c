package drill

import (
	"strings"
	"testing"
	"time"
)

func TestCheckHistory(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	commits := []EpochCommit{{1, "east", at(0)}, {2, "west", at(10)}, {3, "east", at(20)}}
	safe := []Write{
		{"w1", "east", 1, true, at(1)},
		{"w2", "east", 1, true, at(9.9)},
		{"w3", "west", 2, true, at(10.5)},
		{"w4", "east", 1, false, at(11)}, // sent to the fenced east, never acknowledged
		{"w5", "east", 3, true, at(21)},
	}
	if v := CheckHistory(commits, safe); len(v) != 0 {
		t.Fatalf("a safe history has violations: %v", v)
	}
	cases := []struct {
		name  string
		write Write
		kind  string
		text  string
	}{
		{"old primary after the switch", Write{"x1", "east", 1, true, at(10.2)}, "after-newer-epoch", "after epoch 2 (west) was committed"},
		{"second writer in an epoch", Write{"x2", "east", 2, true, at(12)}, "two-writers", "epoch 2: write x2 accepted by east after west"},
		{"epoch never committed", Write{"x3", "west", 9, true, at(12)}, "unknown-epoch", "epoch 9, which was never committed"},
	}
	for _, c := range cases {
		v := CheckHistory(commits, append(append([]Write(nil), safe...), c.write))
		found := false
		for _, x := range v {
			if x.Kind == c.kind && x.Write.ID == c.write.ID && strings.Contains(x.Detail, c.text) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: violations %v, want %s mentioning %q", c.name, v, c.kind, c.text)
		}
	}
	// The wrong region in the right epoch is caught too.
	v := CheckHistory(commits, []Write{{"y", "west", 1, true, at(2)}})
	if len(v) != 1 || v[0].Kind != "wrong-region" {
		t.Errorf("wrong region: %v", v)
	}
}

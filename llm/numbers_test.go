package llm

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestCheckNumbers(t *testing.T) {
	const facts = `{
  "lag_seconds": 1.274,
  "rto_seconds": 2.94,
  "bytes": 1024,
  "writes": 12345678,
  "run_id": "run-20240501-77",
  "region": "us-east-1",
  "at": "2024-05-01T10:42:07Z",
  "duration_ms": 1270,
  "delta": -5,
  "exp": 1.5e3,
  "note": "lag 3.75 s",
  "ip": "10.0.0.9",
  "ratio": 0.99
}`
	tests := []struct {
		name, text string
		want       []string
	}{
		{"empty", "", nil},
		{"no numbers", "The failover went well.", nil},
		{"exact", "Lag was 1.274 s.", nil},
		{"rounded to 2 places", "Lag was 1.27 s.", nil},
		{"rounded to 1 place", "Lag was 1.3 seconds.", nil},
		{"rounded to integer", "Lag was about 1 second.", nil},
		{"trailing zeros past the fact", "Lag was 1.2740 s.", nil},
		{"wrong rounding", "Lag was 1.28 s.", []string{"1.28"}},
		{"invented precision", "Lag was 1.2741 s.", []string{"1.2741"}},
		{"2.94 to 2.9", "RTO 2.9 s", nil},
		{"2.94 to 3", "RTO 3 s", nil},
		{"4.1 invented", "RTO 4.1 s", []string{"4.1"}},
		{"thousands separator", "It copied 1,024 bytes of 12,345,678 writes.", nil},
		{"plain form of a fact", "It copied 1024 bytes.", nil},
		{"wrong thousands", "It copied 1,025 bytes.", []string{"1,025"}},
		{"separator with decimals", "12,345,678.0 writes", nil},
		{"digits inside an id", "Run run-20240501-77 completed.", nil},
		{"other id", "Run run-20240501-78 completed.", []string{"78"}},
		{"region name", "us-east-1 took over.", nil},
		{"other region", "us-east-2 took over.", []string{"2"}},
		{"timestamp parts", "At 10:42:07 on 2024-05-01.", nil},
		{"wrong minute", "At 10:43.", []string{"43"}},
		{"ms for s", "Lag was 1274 ms.", nil},
		{"ms attached", "Lag was 1274ms.", nil},
		{"s for ms", "It took 1.27 s.", nil},
		{"s for ms rounded", "It took 1.3 seconds.", nil},
		{"no conversion without a unit", "It took 2940 units.", []string{"2940"}},
		{"s is not a unit inside a word", "It took 2940 sites.", []string{"2940"}},
		{"number inside a string fact", "lag 3.75 then 3.8", nil},
		{"sign ignored", "Delta was -5, i.e. 5.", nil},
		{"exponent fact", "1,500 or 1500.", nil},
		{"address", "Endpoint 10.0.0.9 answered.", nil},
		{"other address", "Endpoint 10.0.0.8 answered.", []string{"8"}},
		{"percentage of a fraction", "Availability 99%.", []string{"99"}},
		{"fraction itself", "Ratio 0.99.", nil},
		{"leading zero", "At 07 seconds past.", nil},
		{"each once, in order", "6 and 8 and 6.", []string{"6", "8"}},
		{"trailing period", "Bytes: 1024.", nil},
		{"list markers", "1. Fence the primary.\n2. Promote.\n  3) Verify.\n10. Report.\n4.", nil},
		{"not a marker mid-line", "Then step 6. Done", []string{"6"}},
		{"decimal at line start", "5.5 s of lag", []string{"5.5"}},
		{"four digits are no marker", "2025. A year.", []string{"2025"}},
		{"marker needs a space", "6.x is out", []string{"6"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CheckNumbers(tt.text, []byte(facts))
			if !slices.Equal(got, tt.want) {
				t.Errorf("CheckNumbers(%q) = %q, want %q", tt.text, got, tt.want)
			}
		})
	}
}

func TestCheckNumbersFactsForms(t *testing.T) {
	tests := []struct {
		name, facts, text string
		want              []string
	}{
		{"not JSON: read as text", "lag 7 s, run 42", "7 and 42 but 8", []string{"8"}},
		{"empty facts", "", "7", []string{"7"}},
		{"number keys count", `{"p99": 12}`, "p99 is 12", nil},
		{"nested", `{"a": [{"b": [3.5]}]}`, "3.5 and 5", []string{"5"}},
		{"huge integer", `{"n": "123456789012345678901234567890123456789"}`,
			"123456789012345678901234567890123456789", nil},
		{"huge integer differs", `{"n": "123456789012345678901234567890123456789"}`,
			"123456789012345678901234567890123456788", []string{"123456789012345678901234567890123456788"}},
		{"rounding tie both ways", `{"x": 1.275}`, "1.27 1.28", nil},
		{"zero", `{"x": 0}`, "0 and 0.0", nil},
		{"decimal comma is two numbers", `{"x": 3.75}`, "3,75", []string{"3", "75"}},
		{"digit runs of JSON numbers do not count", `{"x": 3.75}`, "75", []string{"75"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CheckNumbers(tt.text, []byte(tt.facts))
			if !slices.Equal(got, tt.want) {
				t.Errorf("CheckNumbers(%q, %q) = %q, want %q", tt.text, tt.facts, got, tt.want)
			}
		})
	}
}

// FuzzCheckNumbers: no panic; every number reported is written in the
// text; a text checked against itself (as a JSON string) has no foreign
// number.
func FuzzCheckNumbers(f *testing.F) {
	f.Add("Lag was 1.27 s (1270 ms) in us-east-1.", []byte(`{"lag": 1.274, "r": "us-east-1"}`))
	f.Add("1. Fence\n2) Promote\n1,024 bytes, 10.0.0.1, v1.2.3", []byte(`[1024, "10.0.0.1"]`))
	f.Add("12,345,678.9 0.000000001 1e400", []byte(`{"x": 1e400, "y": -0.0, "z": 1E-400}`))
	f.Add("", []byte(`{`))
	f.Add("9.", []byte("\xff\"9"))
	f.Fuzz(func(t *testing.T, text string, facts []byte) {
		for _, tok := range CheckNumbers(text, facts) {
			if !strings.Contains(text, tok) {
				t.Fatalf("reported %q, which is not in the text %q", tok, text)
			}
		}
		self, err := json.Marshal(text)
		if err != nil {
			t.Fatal(err)
		}
		if bad := CheckNumbers(text, self); len(bad) > 0 {
			t.Fatalf("text %q checked against itself reports %q", text, bad)
		}
	})
}

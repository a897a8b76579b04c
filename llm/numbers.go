package llm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// CheckNumbers returns the numbers written in text that the facts do not
// hold, as written in text, each once, in order of appearance. It is strict
// on purpose: a narrative that cites anything else falls back to the
// report's template.
//
// Numbers in text are runs of ASCII digits, with a decimal point ("1.27")
// and thousands separators ("1,024", "12,345.6"). A run that is neither
// (an address "10.0.0.1", a version "1.2.3", "1,5") counts as its
// comma-separated parts, and a part with several points as its digit runs.
// Signs are ignored ("-" is also a hyphen: "us-east-1", "2024-05-01"), and
// so are numbers written in words. A list marker is not a number: one to
// three digits at the start of a line (after spaces) followed by "." or ")"
// and a space or the end of the line ("1. Fence the old primary").
//
// The facts (the JSON the model was given) hold every JSON number (by its
// absolute value) and, inside every JSON string (object keys included),
// every number as read in text plus every bare digit run: ids, timestamps,
// region names like "us-east-1". If facts is not valid JSON its text is
// read like the narrative's.
//
// A number in text matches a fact when it is the fact rounded to the
// precision written, ties either way: for the fact 1.274, "1.27", "1.3" and
// "1" match, "1.28" and "1.2740001" do not; for 2.94, "2.9" and "3" match,
// "4.1" does not. Digits past the fact's precision must be zeros ("1.270").
// The one conversion accepted is between milliseconds and seconds when the
// unit follows the number ("1270 ms" or "1270ms" for the fact 1.27, "1.27 s"
// or "1.3 seconds" for the fact 1270). Derived figures (sums, differences,
// ratios, percentages of a fraction: "99%" for 0.99) never match. A number
// of more than 15 significant digits must be written as in the facts.
func CheckNumbers(text string, facts []byte) []string {
	fs := readFacts(facts)
	var bad []string
	seen := map[string]bool{}
	scanNumbers(text, func(t number) {
		if seen[t.text] || listMarkerAt(text, t) || fs.holds(t, unitAfter(text, t.end)) {
			return
		}
		seen[t.text] = true
		bad = append(bad, t.text)
	})
	return bad
}

// number is one number read in a text.
type number struct {
	text       string // as written
	start, end int    // text[start:end] == text
	canon      string // digits without separators or leading zeros, fraction without trailing zeros
	decimals   int    // digits after the point, as written
	value      float64
	finite     bool // value holds the number exactly enough to compare
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// scanNumbers calls fn for every number of s, in order.
func scanNumbers(s string, fn func(number)) {
	for i := 0; i < len(s); {
		if !isDigit(s[i]) {
			i++
			continue
		}
		// A run: digits, and single separators between digits.
		j := i
		for j < len(s) {
			if isDigit(s[j]) {
				j++
			} else if (s[j] == '.' || s[j] == ',') && j+1 < len(s) && isDigit(s[j+1]) {
				j++
			} else {
				break
			}
		}
		splitRun(s, i, j, fn)
		i = j
	}
}

// splitRun reads the run s[start:end] as one number or several.
func splitRun(s string, start, end int, fn func(number)) {
	run := s[start:end]
	if isThousands(run) || !strings.Contains(run, ",") && strings.Count(run, ".") <= 1 {
		fn(makeNumber(s, start, end))
		return
	}
	// "1,5" "10.0.0.1" "1.5,2.5": comma-separated parts, each a number if it
	// has at most one point, else its digit runs.
	for off := start; off < end; {
		partEnd := indexOr(s, off, end, ',')
		if strings.Count(s[off:partEnd], ".") <= 1 {
			fn(makeNumber(s, off, partEnd))
		} else {
			for d := off; d < partEnd; {
				dEnd := indexOr(s, d, partEnd, '.')
				fn(makeNumber(s, d, dEnd))
				d = dEnd + 1
			}
		}
		off = partEnd + 1
	}
}

// indexOr is the index of the first c in s[from:to], or to.
func indexOr(s string, from, to int, c byte) int {
	if i := strings.IndexByte(s[from:to], c); i >= 0 {
		return from + i
	}
	return to
}

// isThousands reports a run like "1,024" or "12,345,678.9".
func isThousands(run string) bool {
	intPart, frac, hasPoint := strings.Cut(run, ".")
	if hasPoint && strings.ContainsAny(frac, ".,") {
		return false
	}
	groups := strings.Split(intPart, ",")
	if len(groups) < 2 || len(groups[0]) > 3 {
		return false
	}
	for _, g := range groups[1:] {
		if len(g) != 3 {
			return false
		}
	}
	return true
}

// makeNumber reads s[start:end]: digits, commas between groups, at most one
// point.
func makeNumber(s string, start, end int) number {
	n := number{text: s[start:end], start: start, end: end}
	n.canon, n.decimals = canonical(strings.ReplaceAll(n.text, ",", ""))
	v, err := strconv.ParseFloat(n.canon, 64)
	// Past 15 significant digits a float64 no longer tells numbers apart:
	// such a number must be written as in the facts.
	significant := len(strings.TrimLeft(strings.Replace(n.canon, ".", "", 1), "0"))
	n.value, n.finite = v, err == nil && !math.IsInf(v, 0) && significant <= 15
	return n
}

// canonical trims the leading zeros of the integer part and the trailing
// zeros of the fraction of an unsigned decimal "007.50" → "7.5", 2.
func canonical(d string) (string, int) {
	intPart, frac, _ := strings.Cut(d, ".")
	decimals := len(frac)
	intPart = strings.TrimLeft(intPart, "0")
	if intPart == "" {
		intPart = "0"
	}
	if frac = strings.TrimRight(frac, "0"); frac != "" {
		return intPart + "." + frac, decimals
	}
	return intPart, decimals
}

// listMarkerAt reports whether n is a list marker: 1 to 3 digits first on
// their line, then "." or ")" and a space or the end of the line.
func listMarkerAt(s string, n number) bool {
	if n.decimals > 0 || len(n.text) > 3 || strings.IndexByte(n.text, ',') >= 0 {
		return false
	}
	for i := n.start - 1; i >= 0 && s[i] != '\n'; i-- {
		if s[i] != ' ' && s[i] != '\t' {
			return false
		}
	}
	if n.end >= len(s) || (s[n.end] != '.' && s[n.end] != ')') {
		return false
	}
	after := n.end + 1
	return after == len(s) || s[after] == ' ' || s[after] == '\t' || s[after] == '\n' || s[after] == '\r'
}

// unit is a time unit written after a number.
type unit int

const (
	noUnit unit = iota
	millis
	seconds
)

// unitAfter reads the word right after a number (after at most one space).
func unitAfter(s string, end int) unit {
	if end < len(s) && s[end] == ' ' {
		end++
	}
	j := end
	for j < len(s) && (s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z') {
		j++
	}
	switch strings.ToLower(s[end:j]) {
	case "ms", "msec", "msecs", "millisecond", "milliseconds":
		return millis
	case "s", "sec", "secs", "second", "seconds":
		return seconds
	}
	return noUnit
}

// factSet is what the facts hold.
type factSet struct {
	exact  map[string]bool // canonical forms
	values []float64       // sorted, absolute, finite
}

func readFacts(facts []byte) *factSet {
	fs := &factSet{exact: map[string]bool{}}
	dec := json.NewDecoder(bytes.NewReader(facts))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				// Not JSON (or truncated): read all of it as text.
				fs.addText(string(facts))
			}
			break
		}
		switch v := tok.(type) {
		case json.Number:
			fs.addJSONNumber(string(v))
		case string:
			fs.addText(v)
		}
	}
	slices.Sort(fs.values)
	return fs
}

func (fs *factSet) add(n number) {
	fs.exact[n.canon] = true
	if n.finite {
		fs.values = append(fs.values, n.value)
	}
}

// addText adds the numbers of a string, and every digit run in it.
func (fs *factSet) addText(s string) {
	scanNumbers(s, fs.add)
	for i := 0; i < len(s); {
		if !isDigit(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		fs.add(makeNumber(s, i, j))
		i = j
	}
}

// addJSONNumber adds a JSON number literal by its absolute value.
func (fs *factSet) addJSONNumber(lit string) {
	lit = strings.TrimPrefix(lit, "-")
	if !strings.ContainsAny(lit, "eE") {
		fs.add(makeNumber(lit, 0, len(lit)))
		return
	}
	if v, err := strconv.ParseFloat(lit, 64); err == nil && !math.IsInf(v, 0) {
		fs.values = append(fs.values, v)
		if v == math.Trunc(v) && math.Abs(v) < 1e15 {
			fs.exact[strconv.FormatFloat(v, 'f', -1, 64)] = true
		}
	}
}

// holds reports whether n is a fact, rounded to n's precision, or the same
// duration in the other unit.
func (fs *factSet) holds(n number, u unit) bool {
	if fs.exact[n.canon] {
		return true
	}
	if !n.finite {
		return false
	}
	tol := 0.5 * math.Pow10(-n.decimals)
	switch {
	case fs.near(n.value, tol):
		return true
	case u == millis:
		return fs.near(n.value/1000, tol/1000)
	case u == seconds:
		return fs.near(n.value*1000, tol*1000)
	}
	return false
}

// near reports a fact within tol of v (ties included, with room for binary
// floating point: 1.275 is 1.27499999…).
func (fs *factSet) near(v, tol float64) bool {
	slack := tol*1e-6 + math.Abs(v)*4e-16
	lo, hi := v-tol-slack, v+tol+slack
	i := sort.SearchFloat64s(fs.values, lo)
	return i < len(fs.values) && fs.values[i] <= hi
}

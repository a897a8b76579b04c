package redis

import (
	"sort"
	"strconv"
	"strings"
)

// parseInfo parses the text of an INFO reply into field → value. Lines end
// in "\r\n" or "\n"; blank lines, section headers and comments ("#
// Replication") and lines without ':' are skipped. The value is everything
// after the first ':'; spaces and "\r" around a line are removed. A field that
// appears twice keeps its last value. It never fails: garbage yields fewer
// fields.
func parseInfo(s string) map[string]string {
	fields := make(map[string]string)
	for line := range strings.Lines(s) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			continue
		}
		fields[key] = value
	}
	return fields
}

// replicaEntry is one slaveN line of a primary's INFO replication:
// "ip=127.0.0.1,port=6380,state=online,offset=1234,lag=0".
type replicaEntry struct {
	IP     string
	Port   int
	State  string
	Offset int64
	Lag    int64 // seconds since the replica's last acknowledgement
}

// parseReplicaEntry parses the value of a slaveN field. ok is false when ip
// or port is missing or a number does not parse; unknown keys are ignored,
// and a missing offset or lag is -1.
func parseReplicaEntry(v string) (e replicaEntry, ok bool) {
	e.Offset, e.Lag = -1, -1
	var hasIP, hasPort bool
	for part := range strings.SplitSeq(strings.TrimSpace(v), ",") {
		key, value, found := strings.Cut(part, "=")
		if !found {
			continue
		}
		var err error
		switch key {
		case "ip":
			e.IP, hasIP = value, value != ""
		case "port":
			e.Port, err = strconv.Atoi(value)
			hasPort = err == nil && e.Port > 0 && e.Port < 65536
		case "state":
			e.State = value
		case "offset":
			e.Offset, err = strconv.ParseInt(value, 10, 64)
		case "lag":
			e.Lag, err = strconv.ParseInt(value, 10, 64)
		}
		if err != nil {
			return replicaEntry{}, false
		}
	}
	if !hasIP || !hasPort {
		return replicaEntry{}, false
	}
	return e, true
}

// replicaEntries returns the slaveN entries of parsed INFO fields that
// parse, in order of N.
func replicaEntries(fields map[string]string) []replicaEntry {
	type numbered struct {
		n int
		e replicaEntry
	}
	var found []numbered
	for key, value := range fields {
		digits, ok := strings.CutPrefix(key, "slave")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(digits)
		if err != nil || n < 0 {
			continue
		}
		if e, ok := parseReplicaEntry(value); ok {
			found = append(found, numbered{n, e})
		}
	}
	sort.Slice(found, func(i, j int) bool { return found[i].n < found[j].n })
	entries := make([]replicaEntry, len(found))
	for i, f := range found {
		entries[i] = f.e
	}
	return entries
}

// intField returns fields[key] as an integer; ok is false when it is
// missing or not an integer.
func intField(fields map[string]string, key string) (v int64, ok bool) {
	s, found := fields[key]
	if !found {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	return v, err == nil
}

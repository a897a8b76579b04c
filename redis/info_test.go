package redis

import (
	"maps"
	"strings"
	"testing"
)

// replicationInfoPrimary is INFO replication of a Redis 7.0 primary.
const replicationInfoPrimary = "# Replication\r\n" +
	"role:master\r\n" +
	"connected_slaves:2\r\n" +
	"slave0:ip=127.0.0.1,port=6380,state=online,offset=1234,lag=0\r\n" +
	"slave1:ip=10.0.0.7,port=6381,state=wait_bgsave,offset=0,lag=12\r\n" +
	"master_failover_state:no-failover\r\n" +
	"master_replid:2f9b1c1d\r\n" +
	"master_repl_offset:1248\r\n" +
	"\r\n"

// replicationInfoReplica is INFO replication of a Redis 7.0 replica whose
// primary is gone.
const replicationInfoReplica = "# Replication\n" +
	"role:slave\n" +
	"master_host:127.0.0.1\n" +
	"master_port:6379\n" +
	"master_link_status:down\n" +
	"master_last_io_seconds_ago:-1\n" +
	"master_sync_in_progress:0\n" +
	"slave_repl_offset:1248\n" +
	"master_link_down_since_seconds:7\n"

func TestParseInfo(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
	}{
		{"empty", "", map[string]string{}},
		{"only comments and blanks", "# Server\r\n\r\n   \n# Replication\n", map[string]string{}},
		{"crlf", "role:master\r\nconnected_slaves:0\r\n", map[string]string{"role": "master", "connected_slaves": "0"}},
		{"lf and no final newline", "role:slave\nmaster_link_status:up", map[string]string{"role": "slave", "master_link_status": "up"}},
		{"value with colons", "master_host:::1\r\n", map[string]string{"master_host": "::1"}},
		{"empty value", "master_host:\r\n", map[string]string{"master_host": ""}},
		{"no colon or no key", "garbage\r\n:value\r\nrole:master\r\n", map[string]string{"role": "master"}},
		{"last duplicate wins", "a:1\na:2\n", map[string]string{"a": "2"}},
		{"lone carriage returns", "a:1\r\r\nb:2\r", map[string]string{"a": "1", "b": "2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseInfo(tt.in); !maps.Equal(got, tt.want) {
				t.Errorf("parseInfo(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}

	primary := parseInfo(replicationInfoPrimary)
	for key, want := range map[string]string{"role": "master", "connected_slaves": "2", "master_repl_offset": "1248"} {
		if primary[key] != want {
			t.Errorf("primary %s = %q, want %q", key, primary[key], want)
		}
	}
	replica := parseInfo(replicationInfoReplica)
	if off, ok := intField(replica, "slave_repl_offset"); !ok || off != 1248 {
		t.Errorf("replica slave_repl_offset = %d, %v, want 1248, true", off, ok)
	}
}

func TestParseReplicaEntry(t *testing.T) {
	tests := []struct {
		in   string
		want replicaEntry
		ok   bool
	}{
		{"ip=127.0.0.1,port=6380,state=online,offset=1234,lag=0", replicaEntry{"127.0.0.1", 6380, "online", 1234, 0}, true},
		{"ip=::1,port=7000,state=wait_bgsave,offset=0,lag=12\r", replicaEntry{"::1", 7000, "wait_bgsave", 0, 12}, true},
		{"ip=10.0.0.1,port=6379", replicaEntry{"10.0.0.1", 6379, "", -1, -1}, true},
		{"ip=10.0.0.1,port=6379,state=online,offset=5,lag=1,future=x,junk", replicaEntry{"10.0.0.1", 6379, "online", 5, 1}, true},
		{"port=6379,state=online", replicaEntry{}, false},
		{"ip=10.0.0.1,state=online", replicaEntry{}, false},
		{"ip=10.0.0.1,port=http", replicaEntry{}, false},
		{"ip=10.0.0.1,port=70000", replicaEntry{}, false},
		{"ip=10.0.0.1,port=1,offset=x", replicaEntry{}, false},
		{"", replicaEntry{}, false},
	}
	for _, tt := range tests {
		got, ok := parseReplicaEntry(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseReplicaEntry(%q) = %+v, %v, want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestReplicaEntries(t *testing.T) {
	fields := parseInfo(replicationInfoPrimary)
	fields["slave_read_only"] = "1" // not a slaveN line
	fields["slave2"] = "garbage"
	got := replicaEntries(fields)
	want := []replicaEntry{
		{"127.0.0.1", 6380, "online", 1234, 0},
		{"10.0.0.7", 6381, "wait_bgsave", 0, 12},
	}
	if len(got) != len(want) {
		t.Fatalf("replicaEntries = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestBrokenReason(t *testing.T) {
	tests := []struct {
		name string
		info string
		want string // substring; "" means not broken
	}{
		{"healthy", "role:slave\nmaster_link_status:up\nmaster_sync_in_progress:0\n", ""},
		{"primary", "role:master\n", "not a replica: ROLE is master"},
		{"no role", "", "not a replica: ROLE is unknown"},
		{"link down since", replicationInfoReplica, "replication link down for 7s (master_link_down_since_seconds)"},
		{"link down last io", "role:slave\nmaster_link_status:down\nmaster_last_io_seconds_ago:4\n", "replication link down for 4s (master_last_io_seconds_ago)"},
		{"link down no figure", "role:slave\nmaster_link_status:down\n", "replication link down (master_link_status:down)"},
		{"sync", "role:slave\nmaster_link_status:down\nmaster_sync_in_progress:1\n", "initial sync"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, got := brokenReason(replicaReading{info: parseInfo(tt.info)})
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("brokenReason = %q, want %q", got, tt.want)
			}
		})
	}
}

func FuzzParseInfo(f *testing.F) {
	f.Add(replicationInfoPrimary)
	f.Add(replicationInfoReplica)
	f.Add("")
	f.Add("\r\n\r\n#\r\n:\r\nslave0:ip=,port=-1,offset=99999999999999999999\r\n")
	f.Fuzz(func(t *testing.T, s string) {
		fields := parseInfo(s)
		for key, value := range fields {
			if key == "" || strings.ContainsAny(key, "\n:") || strings.HasPrefix(key, "#") {
				t.Fatalf("bad key %q", key)
			}
			if strings.Contains(value, "\n") || strings.HasSuffix(value, "\r") {
				t.Fatalf("bad value %q for key %q", value, key)
			}
			parseReplicaEntry(value)
		}
		for _, e := range replicaEntries(fields) {
			if e.IP == "" || e.Port <= 0 || e.Port > 65535 {
				t.Fatalf("bad entry accepted: %+v", e)
			}
		}
		brokenReason(replicaReading{info: fields})
	})
}

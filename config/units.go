package config

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as Go writes it: "500ms", "1m", "1h30m".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String writes the duration without zero parts: "1m", "1h30m", "500ms".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

func (d *Duration) parseScalar(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (use a number and a unit: 500ms, 30s, 5m, 1h)", s)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}

// ByteSize is a number of bytes, written as an integer or with a unit. As in
// PostgreSQL, kB, MB, GB and TB are powers of 1024; KiB, MiB, GiB, TiB are
// accepted too.
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"KB", 1 << 10},
	{"B", 1},
}

// ParseByteSize reads "16MB", "512kB", "1GiB" or "1048576".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			mult = u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (use bytes or a unit: 512kB, 16MB, 1GB)", s)
	}
	if n > 0 && mult > 1 && n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return ByteSize(n * mult), nil
}

func (b *ByteSize) parseScalar(s string) error {
	v, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

func (b ByteSize) String() string {
	n := int64(b)
	for _, u := range byteUnits[:4] {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// MarshalYAML writes the size with its largest exact unit.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

// Secret is a string that never prints: String, MarshalYAML and
// MarshalJSON show a fixed mask. Value returns the real string.
type Secret string

// Redacted is what a secret prints as.
const Redacted = "<redacted>"

// Value is the secret itself, for the code that must use it.
func (s Secret) Value() string { return string(s) }

// String masks the secret. A URL keeps its scheme and host, which say where
// it points without saying how to get in: "https://hooks.example/<redacted>".
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	if u, err := url.Parse(string(s)); err == nil && u.Scheme != "" && u.Host != "" && u.User == nil {
		return u.Scheme + "://" + u.Host + "/" + Redacted
	}
	return Redacted
}

// MarshalYAML masks the secret.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalJSON masks the secret.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.String())), nil }

func (s *Secret) parseScalar(v string) error {
	*s = Secret(v)
	return nil
}

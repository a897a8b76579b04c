package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Sentinel errors that every FieldError wraps, for errors.Is.
var (
	// ErrSyntax is a document that is not valid YAML.
	ErrSyntax = errors.New("syntax error")
	// ErrUnknownKey is a key the configuration does not have.
	ErrUnknownKey = errors.New("unknown key")
	// ErrInvalid is a value of the wrong type or out of range.
	ErrInvalid = errors.New("invalid value")
	// ErrMissing is a required key left out.
	ErrMissing = errors.New("missing value")
	// ErrEnv is a ${VAR} that is not set and has no default.
	ErrEnv = errors.New("environment variable not set")
)

// FieldError is one problem in a configuration, located by file, line and
// key path ("services[2].endpoints").
type FieldError struct {
	File string
	Line int
	Key  string
	Msg  string
	Err  error
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:", e.Line)
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.Err }

// Errors is every problem found in one configuration, in file order.
type Errors []*FieldError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.Is find any of the sentinels.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// err returns nil for an empty list, the sorted list otherwise.
func (es Errors) err() error {
	if len(es) == 0 {
		return nil
	}
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Line != es[j].Line {
			return es[i].Line < es[j].Line
		}
		return es[i].Key < es[j].Key
	})
	return es
}

// AsErrors returns the list of problems inside err, if it holds any.
func AsErrors(err error) (Errors, bool) {
	var es Errors
	if errors.As(err, &es) {
		return es, true
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		return Errors{fe}, true
	}
	return nil, false
}

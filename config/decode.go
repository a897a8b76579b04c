package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxConfigSize bounds what Parse reads; a topology is a few kilobytes.
const maxConfigSize = 4 << 20

// Option changes how Parse reads a document.
type Option func(*decoder)

// WithFilename names the document in errors ("lifeboat.yaml:14: ...").
func WithFilename(name string) Option { return func(d *decoder) { d.file = name } }

// WithLookupEnv replaces os.LookupEnv for ${VAR} expansion (tests, embedding).
func WithLookupEnv(f func(string) (string, bool)) Option {
	return func(d *decoder) { d.lookupEnv = f }
}

// Parse reads a YAML topology over DefaultConfig and fills the defaults of
// list entries. It reports every syntax error, unknown key, wrongly typed
// value and unset ${VAR} at once. It does not check the topology's
// consistency: call Validate (or use Load) for that.
func Parse(r io.Reader, opts ...Option) (*Config, error) {
	cfg, err := parse(r, opts...)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// parse returns the configuration as far as it decoded, with the errors;
// nil when the document could not be read at all.
func parse(r io.Reader, opts ...Option) (*Config, error) {
	d := &decoder{
		file:      "",
		lookupEnv: os.LookupEnv,
		pos:       map[string]int{},
		bad:       map[string]bool{},
	}
	for _, o := range opts {
		o(d)
	}
	cfg := DefaultConfig()
	cfg.file = d.file
	cfg.pos = d.pos
	cfg.bad = d.bad

	data, err := io.ReadAll(io.LimitReader(r, maxConfigSize+1))
	if err != nil {
		return nil, &FieldError{File: d.file, Msg: "read: " + err.Error(), Err: ErrSyntax}
	}
	if len(data) > maxConfigSize {
		return nil, &FieldError{File: d.file, Msg: fmt.Sprintf("larger than %d bytes", maxConfigSize), Err: ErrSyntax}
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &FieldError{File: d.file, Msg: "the document is empty", Err: ErrMissing}
		}
		return nil, d.syntaxError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &FieldError{File: d.file, Line: extra.Line, Msg: "only one YAML document is allowed", Err: ErrSyntax}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	d.decode(root, reflect.ValueOf(cfg).Elem(), "")
	cfg.secrets = d.secrets
	if err := d.errs.err(); err != nil {
		return cfg, err
	}
	cfg.applyDefaults()
	return cfg, nil
}

// Load reads, parses and validates the file at path, reporting the problems
// of both steps together.
func Load(path string, opts ...Option) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cfg, err := parse(f, append([]Option{WithFilename(path)}, opts...)...)
	if cfg == nil {
		return nil, err
	}
	if err != nil {
		// Report what the consistency checks find too, except where a key
		// already failed to decode.
		cfg.applyDefaults()
		es, _ := AsErrors(err)
		if verr := cfg.Validate(); verr != nil {
			ves, _ := AsErrors(verr)
			es = append(es, ves...)
		}
		return nil, es.err()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (d *decoder) syntaxError(err error) error {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	return &FieldError{File: d.file, Line: line, Msg: msg, Err: ErrSyntax}
}

// scalarParser is implemented by types written as one YAML scalar.
type scalarParser interface {
	parseScalar(string) error
}

// decoder walks a yaml.Node tree into Go values by reflection, recording the
// line of every key path and collecting every error instead of stopping at
// the first.
type decoder struct {
	file      string
	lookupEnv func(string) (string, bool)
	errs      Errors
	pos       map[string]int
	bad       map[string]bool
	secrets   []string
	// nodes counts values decoded, aliases included, against maxNodes, so
	// that an alias bomb cannot make Parse run for ever.
	nodes    int
	tooLarge bool
	// expanding holds the aliases being decoded, to refuse a cycle.
	expanding map[*yaml.Node]bool
}

// maxNodes bounds the values one document may expand to.
const maxNodes = 100_000

func (d *decoder) fail(n *yaml.Node, path string, sentinel error, format string, args ...any) {
	d.bad[path] = true
	d.errs = append(d.errs, &FieldError{File: d.file, Line: n.Line, Key: path, Msg: fmt.Sprintf(format, args...), Err: sentinel})
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var scalarParserType = reflect.TypeOf((*scalarParser)(nil)).Elem()

// setDefaults gives a value the decoder just created its defaults.
func setDefaults(v reflect.Value) {
	if v.CanAddr() {
		if d, ok := v.Addr().Interface().(defaulter); ok {
			d.setDefaults()
		}
	}
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	d.nodes++
	if d.nodes > maxNodes {
		if !d.tooLarge {
			d.tooLarge = true
			d.fail(n, path, ErrSyntax, "the document expands to more than %d values (aliases?)", maxNodes)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		if d.expanding[n] {
			d.fail(n, path, ErrSyntax, "alias *%s refers to itself", n.Value)
			return
		}
		if d.expanding == nil {
			d.expanding = map[*yaml.Node]bool{}
		}
		d.expanding[n] = true
		defer delete(d.expanding, n)
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" with no value keeps the default
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
			setDefaults(v.Elem())
		}
		d.decode(n, v.Elem(), path)
		return
	}
	// A struct that also reads from one scalar (cluster: shop, or
	// cluster: {name: shop, peers: [...]}) takes either form.
	if v.CanAddr() && v.Addr().Type().Implements(scalarParserType) && !(v.Kind() == reflect.Struct && n.Kind == yaml.MappingNode) {
		s, ok := d.scalar(n, path)
		if !ok {
			return
		}
		if err := v.Addr().Interface().(scalarParser).parseScalar(s); err != nil {
			d.fail(n, path, ErrInvalid, "%s", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, ErrInvalid, "expected a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.pos[p] = item.Line
			setDefaults(s.Index(i))
			d.decode(item, s.Index(i), p)
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.fail(n, path, ErrInvalid, "expected a mapping of names to values, got %s", describe(n))
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			key, ok := d.scalar(k, path)
			if !ok {
				continue
			}
			p := join(path, key)
			if seen[key] {
				d.fail(k, p, ErrInvalid, "%q is given twice", key)
				continue
			}
			seen[key] = true
			d.pos[p] = k.Line
			elem := reflect.New(v.Type().Elem()).Elem()
			d.decode(val, elem, p)
			m.SetMapIndex(reflect.ValueOf(key), elem)
		}
		v.Set(m)
	case reflect.String:
		if s, ok := d.scalar(n, path); ok {
			v.SetString(s)
		}
	case reflect.Int, reflect.Int64:
		s, ok := d.scalar(n, path)
		if !ok {
			return
		}
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			d.fail(n, path, ErrInvalid, "%q is not a whole number", s)
			return
		}
		v.SetInt(i)
	case reflect.Bool:
		s, ok := d.scalar(n, path)
		if !ok {
			return
		}
		switch s {
		case "true":
			v.SetBool(true)
		case "false":
			v.SetBool(false)
		default:
			d.fail(n, path, ErrInvalid, "%q is not true or false", s)
		}
	default:
		// Unreachable for the types in this package; a programming error.
		d.fail(n, path, ErrInvalid, "cannot decode into %s", v.Type())
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, ErrInvalid, "expected a mapping of keys, got %s", describe(n))
		return
	}
	fields := structFields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key, ok := d.scalar(k, path)
		if !ok {
			continue
		}
		p := join(path, key)
		idx, known := fields[key]
		if !known {
			msg := fmt.Sprintf("unknown key %q", key)
			if s := closest(key, fields); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.fail(k, p, ErrUnknownKey, "%s", msg)
			continue
		}
		if seen[key] {
			d.fail(k, p, ErrInvalid, "key %q is given twice", key)
			continue
		}
		seen[key] = true
		d.pos[p] = k.Line
		d.decode(val, v.Field(idx), p)
	}
}

// scalar returns the node's text with ${VAR} expanded, or records an error
// if the node is not a scalar.
func (d *decoder) scalar(n *yaml.Node, path string) (string, bool) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, ErrInvalid, "expected a single value, got %s", describe(n))
		return "", false
	}
	out, err := expandEnv(n.Value, d.lookupEnv, func(name, value string) {
		if secretName(name) && value != "" {
			d.secrets = append(d.secrets, value)
		}
	})
	if err != nil {
		d.fail(n, path, ErrEnv, "%s", err)
		return "", false
	}
	return out, true
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}

// structFields maps YAML keys to field indexes.
func structFields(t reflect.Type) map[string]int {
	out := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		out[name] = i
	}
	return out
}

// closest suggests a known key within edit distance 2 of an unknown one.
func closest(key string, fields map[string]int) string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	best, bestD := "", 3
	for _, k := range names {
		if dd := editDistance(key, k); dd < bestD {
			best, bestD = k, dd
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

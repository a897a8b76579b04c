package config

import (
	"fmt"
	"regexp"
	"strings"
)

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expandEnv replaces ${VAR} and ${VAR:-default} in s. An unset VAR without a
// default is an error naming it. "$${" stands for a literal "${". A lone "$"
// is kept as it is, so passwords with dollars survive. used is called for
// every variable substituted, with its value.
func expandEnv(s string, lookup func(string) (string, bool), used func(name, value string)) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	var missing []string
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			break
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("unclosed ${ in %q", s[i:])
		}
		expr := s[i+2 : i+end]
		s = s[i+end+1:]
		name, def, hasDef := strings.Cut(expr, ":-")
		if !envName.MatchString(name) {
			return "", fmt.Errorf("${%s}: %q is not a variable name", expr, name)
		}
		v, ok := lookup(name)
		if !ok || (v == "" && hasDef) {
			if !hasDef {
				missing = append(missing, name)
				continue
			}
			v = def
		}
		if used != nil {
			used(name, v)
		}
		b.WriteString(v)
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("environment variable %s is not set (write ${%s:-default} to give a default)", strings.Join(missing, ", "), missing[0])
	}
	return b.String(), nil
}

// secretName reports whether a variable's name says it holds a secret; the
// values of such variables are scrubbed from everything Lifeboat prints.
func secretName(name string) bool {
	u := strings.ToUpper(name)
	for _, w := range []string{"PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "AUTH"} {
		if strings.Contains(u, w) {
			return true
		}
	}
	return false
}

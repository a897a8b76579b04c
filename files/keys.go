package files

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// attrsSuffix marks fileblob's sidecar files; fileblob refuses keys that
// end with it.
const attrsSuffix = ".attrs"

// escapeKey maps a key to a path below a file:// store's root as fileblob
// does (gocloud.dev/blob/fileblob escapeKey, with '/' as the separator):
// control characters, the '/' of "../", the second '/' of "//" and a
// trailing '/' become "__0x<hex>__", and so does anything that already
// looks like such an escape.
func escapeKey(key string) string {
	runes := []rune(key)
	var b strings.Builder
	for i, c := range runes {
		esc := c < 32 ||
			(os.PathSeparator != '/' && c == os.PathSeparator) ||
			(i > 1 && c == '/' && runes[i-1] == '.' && runes[i-2] == '.') ||
			(i > 0 && c == '/' && runes[i-1] == '/') ||
			(c == '/' && i == len(runes)-1)
		if !esc {
			esc, _, _ = unescapeAt(runes, i)
		}
		if esc {
			fmt.Fprintf(&b, "__%#x__", c)
		} else {
			b.WriteRune(c)
		}
	}
	return b.String()
}

// unescapeKey reverses escapeKey, as fileblob's listing does.
func unescapeKey(path string) string {
	if !strings.Contains(path, "__0x") {
		return path
	}
	runes := []rune(path)
	var b strings.Builder
	for i := 0; i < len(runes); i++ {
		if ok, r, end := unescapeAt(runes, i); ok {
			b.WriteRune(r)
			i = end
			continue
		}
		b.WriteRune(runes[i])
	}
	return b.String()
}

// unescapeAt reports whether an escape "__0x<hex>__" starts at r[i], the
// rune it stands for, and the index of its last rune.
func unescapeAt(r []rune, i int) (bool, rune, int) {
	if i+4 > len(r) || string(r[i:i+4]) != "__0x" {
		return false, 0, 0
	}
	j := i + 4
	start := j
	for j < len(r) && r[j] != '_' {
		j++
	}
	if j+1 >= len(r) || r[j+1] != '_' {
		return false, 0, 0
	}
	v, err := strconv.ParseInt(string(r[start:j]), 16, 32)
	if err != nil {
		return false, 0, 0
	}
	return true, rune(v), j + 1
}

package files

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// manifestVersion is the format of the manifest object (1: JSON, no
// longer written; 2: binary, see encodeManifest).
const manifestVersion = 2

// manifestMagic starts a manifest object of format 2.
const manifestMagic = "lifeboat manifest 2\n"

// manifestEntry is what the destination holds of a key, as of its last
// copy or check: the source object's size, modification time and MD5 at
// the time (the destination cannot take the source's modification time),
// and the destination's own modification time once a listing showed it.
type manifestEntry struct {
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
	MD5     string    `json:"md5,omitempty"` // hex; the source's, when it had one
	// DstModTime is the destination object's modification time after the
	// copy; a different one means someone changed the copy.
	DstModTime time.Time `json:"dst_mtime,omitzero"`
}

// manifestDocV1 is a manifest object of format 1 (JSON), read to carry
// its entries over.
type manifestDocV1 struct {
	Version int                      `json:"version"`
	Source  string                   `json:"source"` // redacted
	Written time.Time                `json:"written"`
	Objects map[string]manifestEntry `json:"objects"`
}

// manifestKey is the manifest's key at the destination for a source: one
// per source, so that a destination can be synced from several sources
// (the primary, and in a failback the other way round) without mixing
// them up.
func manifestKey(srcRedacted string) string {
	return metaPrefix + "manifest-" + manifestID(srcRedacted) + ".bin"
}

// manifestKeyV1 is where format 1 kept the manifest.
func manifestKeyV1(srcRedacted string) string {
	return metaPrefix + "manifest-" + manifestID(srcRedacted) + ".json"
}

func manifestID(srcRedacted string) string {
	h := sha256.Sum256([]byte(srcRedacted))
	return hex.EncodeToString(h[:8])
}

// loadManifest reads the manifest; a missing one is empty. A manifest that
// does not parse is dropped with a warning: it is only an optimisation,
// every entry can be rebuilt by comparing content. Without one, a
// manifest of format 1 is read (v1 set): the pass writes it again in
// format 2 and removes it.
func (s *Syncer) loadManifest(ctx context.Context) (entries []manifestItem, v1 bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	key := s.manifestKey
	data, err := readObject(ctx, s.dst.bucket, key)
	if gcerrors.Code(err) == gcerrors.NotFound {
		key, v1 = s.manifestKeyV1, true
		data, err = readObject(ctx, s.dst.bucket, key)
	}
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, &StoreError{Op: "read manifest " + key + " from", URL: s.dst.redacted, Err: err}
	}
	if v1 {
		var doc manifestDocV1
		err = json.Unmarshal(data, &doc)
		if err == nil && (doc.Version != 1 || doc.Objects == nil) {
			err = fmt.Errorf("version %d, %d objects", doc.Version, len(doc.Objects))
		}
		entries = make([]manifestItem, 0, len(doc.Objects))
		for _, k := range slices.Sorted(maps.Keys(doc.Objects)) {
			entries = append(entries, manifestItem{key: k, manifestEntry: doc.Objects[k]})
		}
	} else {
		entries, err = decodeManifest(data)
	}
	if err != nil {
		s.log.Warn("files sync: manifest unreadable, comparing content instead", "key", key, "destination", s.dst.redacted, "error", err.Error())
		return nil, v1, nil
	}
	return entries, v1, nil
}

// readObject reads a whole object into a buffer of its size (where
// blob.Bucket.ReadAll grows one as it reads: ~3 times the size allocated
// and copied).
func readObject(ctx context.Context, b *blob.Bucket, key string) ([]byte, error) {
	r, err := b.NewReader(ctx, key, nil)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	buf := make([]byte, 0, r.Size()+bytes.MinRead)
	for {
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, len(buf)) // it grew meanwhile
		}
	}
}

// writeManifest replaces the manifest with entries (sorted by key) in one
// write (a temporary file renamed, or one PUT).
func (s *Syncer) writeManifest(ctx context.Context, entries []manifestItem) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	data := encodeManifest(s.src.redacted, time.Now(), entries)
	err := s.dst.bucket.WriteAll(ctx, s.manifestKey, data, &blob.WriterOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return &StoreError{Op: "write manifest " + s.manifestKey + " to", URL: s.dst.redacted, Err: err}
	}
	return nil
}

// removeManifestV1 removes the manifest of format 1, once the pass has
// written its entries in format 2.
func (s *Syncer) removeManifestV1(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	key := s.manifestKeyV1
	if err := s.dst.bucket.Delete(ctx, key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return &StoreError{Op: "remove manifest " + key + " from", URL: s.dst.redacted, Err: err}
	}
	return nil
}

// Flags of an entry of format 2: which optional fields follow.
const (
	entryModTime    = 1 << iota // the source's modification time
	entryDstModTime             // the destination's
	entryMD5                    // the source's MD5, in hex
)

// encodeManifest encodes a manifest in format 2, which decodes ~30 times
// faster than format 1's JSON (100,000 entries: ~6 ms against ~170 ms),
// in a third of the bytes:
//
//	"lifeboat manifest 2\n"
//	source     string: the source's URL, redacted (for a reader)
//	written    varint: Unix seconds
//	count      uvarint: number of entries
//	entries    by key, each:
//	  key      string
//	  flags    byte: entryModTime | entryDstModTime | entryMD5
//	  size     varint
//	  mtime    varint Unix seconds, uvarint nanoseconds (entryModTime)
//	  dst      varint Unix seconds, uvarint nanoseconds (entryDstModTime)
//	  md5      string (entryMD5)
//	crc        4 bytes: CRC-32C (Castagnoli) of all the above, little-endian
//
// where a string is its length (uvarint) then its bytes. Times keep their
// nanoseconds; a zero time has its flag unset.
func encodeManifest(source string, written time.Time, entries []manifestItem) []byte {
	n := len(manifestMagic) + len(source) + 32
	for _, e := range entries {
		n += len(e.key) + 48 + len(e.MD5)
	}
	b := make([]byte, 0, n)
	b = append(b, manifestMagic...)
	b = appendString(b, source)
	b = binary.AppendVarint(b, written.Unix())
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = appendString(b, e.key)
		var flags byte
		if !e.ModTime.IsZero() {
			flags |= entryModTime
		}
		if !e.DstModTime.IsZero() {
			flags |= entryDstModTime
		}
		if e.MD5 != "" {
			flags |= entryMD5
		}
		b = append(b, flags)
		b = binary.AppendVarint(b, e.Size)
		if flags&entryModTime != 0 {
			b = appendTime(b, e.ModTime)
		}
		if flags&entryDstModTime != 0 {
			b = appendTime(b, e.DstModTime)
		}
		if flags&entryMD5 != 0 {
			b = appendString(b, e.MD5)
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendTime(b []byte, t time.Time) []byte {
	return binary.AppendUvarint(binary.AppendVarint(b, t.Unix()), uint64(t.Nanosecond()))
}

// decodeManifest decodes a manifest of format 2: its entries, sorted by
// key. Keys and MD5s are substrings of one copy of data.
func decodeManifest(data []byte) ([]manifestItem, error) {
	if len(data) < len(manifestMagic)+4 || string(data[:len(manifestMagic)]) != manifestMagic {
		return nil, errors.New("not a manifest of format 2")
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(body):]) {
		return nil, errors.New("checksum mismatch")
	}
	d := manifestDecoder{s: string(body[len(manifestMagic):])}
	d.string() // source
	d.varint() // written
	count := d.uvarint()
	if count > uint64(len(d.s)) { // an entry takes 3 bytes at least
		return nil, errors.New("corrupt: entry count")
	}
	entries := make([]manifestItem, 0, count)
	for range count {
		key := d.string()
		flags := d.byte()
		e := manifestEntry{Size: d.varint()}
		if flags&entryModTime != 0 {
			e.ModTime = d.time()
		}
		if flags&entryDstModTime != 0 {
			e.DstModTime = d.time()
		}
		if flags&entryMD5 != 0 {
			e.MD5 = d.string()
		}
		if d.err != nil {
			break
		}
		if n := len(entries); n > 0 && entries[n-1].key >= key {
			return nil, errors.New("corrupt: keys out of order")
		}
		entries = append(entries, manifestItem{key: key, manifestEntry: e})
	}
	if d.err == nil && len(d.s) != 0 {
		d.err = errors.New("corrupt: bytes after the entries")
	}
	if d.err != nil {
		return nil, d.err
	}
	return entries, nil
}

// manifestDecoder reads the fields of a manifest of format 2 from s; the
// first error sticks and makes every later read return zero.
type manifestDecoder struct {
	s   string
	err error
}

var errTruncated = errors.New("corrupt: truncated")

func (d *manifestDecoder) uvarint() uint64 {
	var v uint64
	for i := 0; i < binary.MaxVarintLen64 && i < len(d.s); i++ {
		c := d.s[i]
		if i == binary.MaxVarintLen64-1 && c > 1 {
			break // overflows 64 bits
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			d.s = d.s[i+1:]
			return v
		}
	}
	if d.err == nil {
		d.err = errTruncated
	}
	d.s = ""
	return 0
}

func (d *manifestDecoder) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

func (d *manifestDecoder) byte() byte {
	if len(d.s) == 0 {
		if d.err == nil {
			d.err = errTruncated
		}
		return 0
	}
	c := d.s[0]
	d.s = d.s[1:]
	return c
}

func (d *manifestDecoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.s)) {
		if d.err == nil {
			d.err = errTruncated
		}
		d.s = ""
		return ""
	}
	v := d.s[:n]
	d.s = d.s[n:]
	return v
}

func (d *manifestDecoder) time() time.Time {
	sec := d.varint()
	nsec := d.uvarint()
	if nsec >= 1e9 && d.err == nil {
		d.err = errors.New("corrupt: nanoseconds out of range")
	}
	return time.Unix(sec, int64(nsec))
}

// manifestItem is a manifest entry and its key.
type manifestItem struct {
	key string
	manifestEntry
}

func compareItemKey(it manifestItem, key string) int { return strings.Compare(it.key, key) }

// manifest is the manifest of one pass: the entries loaded at its start
// (or at its last save), sorted by key so that a pass looks them up side
// by side with its sorted listings instead of hashing every key, and
// what changed since as objects are copied, checked or deleted.
type manifest struct {
	base      []manifestItem // sorted by key; never changed in place
	changes   map[string]manifestChange
	dirty     bool
	lastWrite time.Time
	// v1 is set while a manifest of format 1 remains to be removed.
	v1 bool
}

// manifestChange is a key's entry set or removed since base.
type manifestChange struct {
	e       manifestEntry
	removed bool
}

func newManifest(base []manifestItem) *manifest {
	return &manifest{base: base, changes: map[string]manifestChange{}, lastWrite: time.Now()}
}

// get returns key's entry, if there is one.
func (m *manifest) get(key string) (manifestEntry, bool) {
	if c, ok := m.changes[key]; ok {
		return c.e, !c.removed
	}
	if i, ok := slices.BinarySearchFunc(m.base, key, compareItemKey); ok {
		return m.base[i].manifestEntry, true
	}
	return manifestEntry{}, false
}

func (m *manifest) set(key string, e manifestEntry) {
	if old, ok := m.get(key); ok && old == e {
		return
	}
	m.changes[key] = manifestChange{e: e}
	m.dirty = true
}

func (m *manifest) remove(key string) {
	if _, ok := m.get(key); ok {
		m.changes[key] = manifestChange{removed: true}
		m.dirty = true
	}
}

// fold merges the changes into base and returns it: the entries, sorted.
// The slice is never changed afterwards (a later fold makes a new one),
// so it can be read without the pass's lock.
func (m *manifest) fold() []manifestItem {
	if len(m.changes) == 0 {
		return m.base
	}
	keys := slices.Sorted(maps.Keys(m.changes))
	out := make([]manifestItem, 0, len(m.base)+len(keys))
	i := 0
	for _, k := range keys {
		for i < len(m.base) && m.base[i].key < k {
			out = append(out, m.base[i])
			i++
		}
		if i < len(m.base) && m.base[i].key == k {
			i++
		}
		if c := m.changes[k]; !c.removed {
			out = append(out, manifestItem{key: k, manifestEntry: c.e})
		}
	}
	out = append(out, m.base[i:]...)
	m.base = out
	clear(m.changes)
	return out
}

package files

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// manifestVersion is the format of the manifest object.
const manifestVersion = 1

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

// manifestDoc is the manifest object.
type manifestDoc struct {
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
	h := sha256.Sum256([]byte(srcRedacted))
	return metaPrefix + "manifest-" + hex.EncodeToString(h[:8]) + ".json"
}

// loadManifest reads the manifest; a missing one is empty. A manifest that
// does not parse is dropped with a warning: it is only an optimisation,
// every entry can be rebuilt by comparing content.
func (s *Syncer) loadManifest(ctx context.Context) (map[string]manifestEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	data, err := s.dst.bucket.ReadAll(ctx, s.manifestKey)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return map[string]manifestEntry{}, nil
	}
	if err != nil {
		return nil, &StoreError{Op: "read manifest " + s.manifestKey + " from", URL: s.dst.redacted, Err: err}
	}
	var doc manifestDoc
	if err := json.Unmarshal(data, &doc); err != nil || doc.Version != manifestVersion || doc.Objects == nil {
		s.log.Warn("files sync: manifest unreadable, comparing content instead", "key", s.manifestKey, "destination", s.dst.redacted, "error", fmt.Sprint(err))
		return map[string]manifestEntry{}, nil
	}
	return doc.Objects, nil
}

// writeManifest replaces the manifest with entries in one write (a
// temporary file renamed, or one PUT).
func (s *Syncer) writeManifest(ctx context.Context, entries map[string]manifestEntry) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	doc := manifestDoc{Version: manifestVersion, Source: s.src.redacted, Written: time.Now().UTC(), Objects: entries}
	data, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	err = s.dst.bucket.WriteAll(ctx, s.manifestKey, data, &blob.WriterOptions{ContentType: "application/json"})
	if err != nil {
		return &StoreError{Op: "write manifest " + s.manifestKey + " to", URL: s.dst.redacted, Err: err}
	}
	return nil
}

// manifest is the manifest of one pass: the entries loaded at its start,
// updated as objects are copied, checked or deleted.
type manifest struct {
	entries   map[string]manifestEntry
	dirty     bool
	lastWrite time.Time
}

func (m *manifest) set(key string, e manifestEntry) {
	if old, ok := m.entries[key]; ok && old == e {
		return
	}
	m.entries[key] = e
	m.dirty = true
}

func (m *manifest) remove(key string) {
	if _, ok := m.entries[key]; ok {
		delete(m.entries, key)
		m.dirty = true
	}
}

func (m *manifest) snapshot() map[string]manifestEntry {
	return maps.Clone(m.entries)
}

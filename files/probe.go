// Package files is Lifeboat's file-share and blob-bucket system: probes of a
// share's root, and its cross-region replication. Stores are reached through
// gocloud.dev/blob: file:// (fileblob), s3:// (S3 and S3-compatible servers),
// azblob:// and gs://.
//
// A Syncer copies one store to another, one pass at a time: incremental
// (size, the source's modification time and MD5 as recorded in a manifest
// at the destination, content hashes when those cannot tell), resumable
// after a crash, with bounded concurrency and streamed, atomic writes;
// per-object failures are reported and the rest is synced. A Replicator
// runs passes from a service's primary to each standby and reports their
// lag as a replication.Source.
package files

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file:// stores

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/health"
)

// Prober checks a file share or bucket: it opens the store and lists the
// first entry of its root.
type Prober struct {
	url string
}

var _ health.Prober = (*Prober)(nil)

// NewProber makes a prober for an endpoint: a file://, s3://, azblob:// or
// gs:// URL, or an absolute path (taken as file://).
func NewProber(endpoint string) *Prober {
	return &Prober{url: StoreURL(endpoint)}
}

// StoreURL turns an endpoint into a gocloud.dev/blob URL.
func StoreURL(endpoint string) string {
	if strings.HasPrefix(endpoint, "/") {
		return "file://" + (&url.URL{Path: endpoint}).EscapedPath()
	}
	return endpoint
}

// Probe opens the store and lists one entry of its root. An empty root is
// healthy; a missing directory or bucket is not.
func (p *Prober) Probe(ctx context.Context) health.Result {
	b, err := blob.OpenBucket(ctx, p.url)
	if err != nil {
		return health.Result{Err: fmt.Errorf("open %s: %s", config.RedactURL(p.url), cleanBlobErr(err))}
	}
	defer b.Close()
	it := b.List(&blob.ListOptions{Delimiter: "/"})
	if _, err := it.Next(ctx); err != nil && err != io.EOF {
		return health.Result{Err: fmt.Errorf("list %s: %s", config.RedactURL(p.url), cleanBlobErr(err))}
	}
	return health.Result{}
}

// cleanBlobErr drops gocloud's "blob (code=...): " prefix noise.
func cleanBlobErr(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, "): "); i >= 0 && strings.HasPrefix(msg, "blob ") {
		msg = msg[i+3:]
	}
	return msg
}

// Package dashboard serves Lifeboat's web dashboard: one page (index.html)
// and its scripts and styles under /ui/, embedded in the binary, with no
// external resource, so it works offline. The page reads the API of the
// node that serves it (status, runs, the event stream) with the bearer
// token the operator types in, kept in the tab's sessionStorage only.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"time"
)

//go:embed assets
var assets embed.FS

// Security headers of every answer: only this origin's scripts, styles and
// API; no framing; no sniffing; no referrer.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "no-referrer",
}

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves GET / (the page) and GET /ui/<asset> (its scripts,
// styles and icon); anything else is 404. Mount it with
// mux.Handle("GET /{$}", h) and mux.Handle("GET /ui/", h).
func Handler() http.Handler {
	files := load()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, files["index.html"])
	})
	mux.HandleFunc("GET /ui/{name}", func(w http.ResponseWriter, r *http.Request) {
		a, ok := files[r.PathValue("name")]
		if !ok {
			http.Error(w, "no such dashboard asset: "+r.URL.Path, http.StatusNotFound)
			return
		}
		serve(w, r, a)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range securityHeaders {
			w.Header().Set(k, v)
		}
		mux.ServeHTTP(w, r)
	})
}

// load reads the embedded assets by file name.
func load() map[string]*asset {
	files := map[string]*asset{}
	entries, err := assets.ReadDir("assets")
	if err != nil {
		panic(err) // the directory is embedded: it always exists
	}
	for _, e := range entries {
		body, err := fs.ReadFile(assets, "assets/"+e.Name())
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(body)
		files[e.Name()] = &asset{body: body, contentType: contentType(e.Name()), etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return files
}

// contentType is a file's media type by its extension, with a charset for
// text.
func contentType(name string) string {
	switch path.Ext(name) {
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".html":
		return "text/html; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	}
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

// serve writes an asset; the browser revalidates it every time (ETag), so
// a new binary's page is never mixed with an old script.
func serve(w http.ResponseWriter, r *http.Request, a *asset) {
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

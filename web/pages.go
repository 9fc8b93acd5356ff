package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"path"
	"time"

	"lookalike/server"
)

// assetFiles are the pages, styles and scripts, served as they are.
//
//go:embed assets
var assetFiles embed.FS

// contentSecurityPolicy keeps the pages to their own scripts and styles. Photos and pasted
// photo URLs may come from anywhere (the page fetches a pasted URL itself; the server never
// fetches URLs for a browser).
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' blob: data: https: http:; connect-src 'self' https: http:; " +
	"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// asset is one embedded file with its ETag.
type asset struct {
	data        []byte
	etag        string
	contentType string
}

// pages serves the storefront, the duplicate review, the status page and their assets.
type pages struct {
	files  map[string]asset // by path under assets/
	config []byte           // /ui/config.json
}

// pageRoute maps a page path to its file.
type pageRoute struct{ pattern, file string }

// pageRoutes are the pages.
func pageRoutes() []pageRoute {
	return []pageRoute{
		{"GET /{$}", "index.html"},
		{"GET /product", "product.html"},
		{"GET /duplicates", "duplicates.html"},
		{"GET /status", "status.html"},
		{"GET /favicon.ico", "icon.svg"},
	}
}

func newPages(gw server.Gateway) (*pages, error) {
	p := &pages{files: map[string]asset{}}
	root, err := fs.Sub(assetFiles, "assets")
	if err != nil {
		return nil, err
	}
	err = fs.WalkDir(root, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(root, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		ct := mime.TypeByExtension(path.Ext(name))
		if ct == "" {
			ct = "application/octet-stream"
		}
		p.files[name] = asset{data: data, etag: `"` + hex.EncodeToString(sum[:16]) + `"`, contentType: ct}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("web: read the page assets: %w", err)
	}
	cfg := struct {
		// MetricsHost and MetricsPort locate /metrics (an empty host: the page's own).
		MetricsHost string `json:"metrics_host"`
		MetricsPort string `json:"metrics_port"`
	}{}
	if gw.MetricsAddr != "" {
		host, port, err := net.SplitHostPort(gw.MetricsAddr)
		if err == nil {
			if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
				host = ""
			}
			cfg.MetricsHost, cfg.MetricsPort = host, port
		}
	}
	if p.config, err = json.Marshal(cfg); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *pages) register(mux *http.ServeMux) {
	for _, r := range pageRoutes() {
		mux.Handle(r.pattern, p.file(r.file))
	}
	mux.HandleFunc("GET /assets/{name...}", func(w http.ResponseWriter, r *http.Request) {
		p.file(r.PathValue("name")).ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /ui/config.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(p.config)
	})
}

// file serves one asset: revalidated on every use (no-cache) and answered with 304 while its
// ETag holds.
func (p *pages) file(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := p.files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("ETag", a.etag)
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.data))
	})
}

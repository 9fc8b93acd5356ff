package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"html/template"
	"image"
	"image/jpeg"
	"io"
	"net/http"
	"sync"
	"time"

	// Decoders registered with image.Decode, which recompress uses; thumbnails decode
	// through embed instead.
	_ "image/gif"
	_ "image/png"

	_ "golang.org/x/image/bmp"
	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp"

	"lookalike/embed"
)

// thumbnailSize is the longest side of a thumbnail in the review page, in pixels.
const thumbnailSize = 180

// maxThumbnailRedirects bounds the redirects followed for one thumbnail (all to its own host).
const maxThumbnailRedirects = 3

// thumbnail decodes a photo and returns a small JPEG of it as a data: URI, so the page carries
// its pictures inside it and can be mailed or archived as one file. It decodes with the
// embedder's limits: the header is checked against the byte and pixel limits before any
// pixel memory is allocated, so a small file declaring a huge image is refused (an error
// wrapping embed.ErrTooLarge) rather than decoded; a large JPEG is decoded at a reduced
// scale that still covers the thumbnail.
func thumbnail(img []byte) (template.URL, error) {
	dec, err := embed.Decode(img, embed.DecodeOptions{Limits: embed.DefaultLimits(), MinShortSide: thumbnailSize})
	if err != nil {
		return "", fmt.Errorf("decode: %w", err)
	}
	src := dec.Upright()
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	if w == 0 || h == 0 {
		return "", fmt.Errorf("empty image")
	}
	scale := float64(thumbnailSize) / float64(max(w, h))
	if scale > 1 {
		scale = 1
	}
	tw, th := max(1, int(float64(w)*scale)), max(1, int(float64(h)*scale))
	dst := image.NewRGBA(image.Rect(0, 0, tw, th))
	draw.ApproxBiLinear.Scale(dst, dst.Bounds(), src, b, draw.Src, nil)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, dst, &jpeg.Options{Quality: 80}); err != nil {
		return "", fmt.Errorf("encode thumbnail: %w", err)
	}
	// The URL is built from base64 only, so it cannot break out of the attribute.
	return template.URL("data:image/jpeg;base64," + base64.StdEncoding.EncodeToString(buf.Bytes())), nil
}

// newThumbnailLoader is the image loader of the review page: the loader's byte cap and
// timeout, and redirects followed only to the same scheme and host. An image_url is whatever
// the catalogue was given, and the page is made on an operator's machine: a redirect must not
// point that machine at another address.
func newThumbnailLoader(timeout time.Duration) *imageLoader {
	l := newImageLoader(timeout)
	l.http.CheckRedirect = sameHostRedirect
	return l
}

// sameHostRedirect is an http.Client CheckRedirect that refuses a redirect to another scheme
// or host, and more than maxThumbnailRedirects of them.
func sameHostRedirect(req *http.Request, via []*http.Request) error {
	from := via[0].URL
	if req.URL.Scheme != from.Scheme || req.URL.Host != from.Host {
		return fmt.Errorf("refused a redirect from %s://%s to another host, %s://%s", from.Scheme, from.Host, req.URL.Scheme, req.URL.Host)
	}
	if len(via) > maxThumbnailRedirects {
		return fmt.Errorf("stopped after %d redirects", maxThumbnailRedirects)
	}
	return nil
}

type htmlMember struct {
	Product productJSON
	Thumb   template.URL
	Missing string // why there is no thumbnail
}

type htmlCluster struct {
	Number   int
	Members  []htmlMember
	Edges    []edgeJSON
	Lo, Hi   float32
	Tier     string
	Resolved bool
}

type htmlReport struct {
	Generated string
	Threshold float64
	Total     int
	Clusters  []htmlCluster
}

func renderDedupHTML(ctx context.Context, w io.Writer, out dedupJSON, loader *imageLoader, now time.Time) error {
	report := htmlReport{Generated: now.UTC().Format(time.RFC1123), Threshold: out.Threshold}
	type job struct{ c, m int }
	var jobs []job
	for i, cl := range out.Clusters {
		hc := htmlCluster{Number: i + 1, Edges: cl.Edges, Tier: cl.Tier, Resolved: cl.Resolved}
		hc.Lo, hc.Hi = scoreRange(cl.Edges)
		for j, p := range cl.Products {
			hc.Members = append(hc.Members, htmlMember{Product: p})
			jobs = append(jobs, job{i, j})
		}
		report.Clusters = append(report.Clusters, hc)
		report.Total += len(cl.Products)
	}
	// Thumbnails are independent; decoding them a few at a time keeps big reports quick.
	var wg sync.WaitGroup
	next := make(chan job)
	for range min(4, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				m := &report.Clusters[j.c].Members[j.m]
				m.Thumb, m.Missing = memberThumbnail(ctx, loader, m.Product)
			}
		}()
	}
	for _, j := range jobs {
		next <- j
	}
	close(next)
	wg.Wait()
	if err := dedupPage.Execute(w, report); err != nil {
		return fmt.Errorf("render: %w", err)
	}
	return nil
}

func memberThumbnail(ctx context.Context, loader *imageLoader, p productJSON) (template.URL, string) {
	if p.ImageURL == "" {
		return "", "no image_url stored"
	}
	img, err := loader.load(ctx, p.ImageURL)
	if err != nil {
		return "", oneLine(err.Error())
	}
	uri, err := thumbnail(img)
	if err != nil {
		return "", oneLine(err.Error())
	}
	return uri, ""
}

var dedupPage = template.Must(template.New("dedup").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Lookalike duplicate review: {{len .Clusters}} clusters</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin-bottom:.2em}
.meta{color:#666;margin-top:0}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:1em;margin:1em 0}
h2{font-size:1.1em;margin:0 0 .6em}
.row{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:{{.ThumbSize}}px}
figure img{width:{{.ThumbSize}}px;height:{{.ThumbSize}}px;object-fit:contain;background:#eee;border-radius:4px}
.missing{width:{{.ThumbSize}}px;height:{{.ThumbSize}}px;display:flex;align-items:center;justify-content:center;background:#eee;color:#a00;font-size:.8em;text-align:center;border-radius:4px}
figcaption{font-size:.85em;word-break:break-all;margin-top:.3em}
figcaption .id{font-weight:600}
figcaption .cat{color:#666}
table{border-collapse:collapse;margin-top:.8em;font-size:.85em}
td,th{padding:.15em .8em;border-bottom:1px solid #eee;text-align:left}
td.score{font-variant-numeric:tabular-nums}
</style>
</head>
<body>
<h1>Near-duplicate review</h1>
<p class="meta">{{len .Clusters}} clusters, {{.Total}} products. Tiers: exact = the same bytes; copy = the perceptual hash and the embedding agree (a re-encoded, resized or lightly edited photo), or one photo's hash matches a crop window of the other's and their colours agree once aligned (crop distance and correlation: a cropped photo); look-alike = only the embedding agrees (cosine similarity; 1 is the same picture): review it. Generated {{.Generated}} by lookalike dedup.</p>
{{if not .Clusters}}<p>No near-duplicates at this threshold.</p>{{end}}
{{range .Clusters}}
<section id="cluster-{{.Number}}">
<h2>Cluster {{.Number}}: {{len .Members}} products, weakest tier {{.Tier}}, scores {{printf "%.4f" .Lo}} to {{printf "%.4f" .Hi}}{{if .Resolved}} (resolved){{end}}</h2>
<div class="row">
{{range .Members}}<figure>
{{if .Thumb}}<img src="{{.Thumb}}" alt="{{.Product.ID}}">{{else}}<div class="missing">no thumbnail:<br>{{.Missing}}</div>{{end}}
<figcaption><span class="id">{{.Product.ID}}</span><br>{{.Product.Title}}<br><span class="cat">{{.Product.Category}}</span></figcaption>
</figure>
{{end}}</div>
<table><tr><th>tier</th><th>cosine</th><th>hash distance</th><th>crop distance</th><th>pair</th><th>decision</th></tr>
{{range .Edges}}<tr><td>{{.Tier}}{{if .SameBytes}} (same bytes){{end}}</td><td class="score">{{printf "%.4f" .Score}}</td><td class="score">{{if ge .Hamming 0}}{{.Hamming}} of 64{{else}}-{{end}}</td><td class="score">{{if ge .CropHamming 0}}{{.CropHamming}} of 64{{if .CropCorrelation}}, correlation {{printf "%.4f" .CropCorrelation}}{{end}}{{else}}-{{end}}</td><td>{{.A}} ~ {{.B}}</td><td>{{with .Decision}}{{.Verdict}}{{if .Keep}}, keep {{.Keep}}{{end}}{{if .By}} by {{.By}}{{end}}{{end}}</td></tr>
{{end}}</table>
</section>
{{end}}
</body>
</html>
`))

// ThumbSize lets the page's CSS follow the thumbnail size constant.
func (htmlReport) ThumbSize() int { return thumbnailSize }

package web_test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/color/palette"
	"image/draw"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// chromiumPath finds the browser: $LOOKALIKE_CHROMIUM, else Debian's chromium (or another
// Chrome) on PATH. Without one the browser tests are skipped, except in CI (CI=true), where a
// missing browser is a failure: `make test` installs it (LOOKALIKE_SETUP_BROWSER=1).
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("LOOKALIKE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const how = "install it with `LOOKALIKE_SETUP_BROWSER=1 bash scripts/setup.sh` (Debian's chromium) or point LOOKALIKE_CHROMIUM at one"
	if os.Getenv("CI") == "true" {
		t.Fatalf("no chromium on PATH and CI=true: the browser tests must run in CI; %s", how)
	}
	t.Skipf("no chromium on PATH: browser tests skipped; %s", how)
	return ""
}

// pageProblems collects what a page must never do: a failed request (a network error or an
// HTTP error status) and anything logged as an error (console.error, an uncaught exception,
// a browser log error such as a content policy violation).
type pageProblems struct {
	mu       sync.Mutex
	problems []string
}

func (p *pageProblems) add(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.problems = append(p.problems, fmt.Sprintf(format, args...))
}

func (p *pageProblems) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.problems = nil
}

func (p *pageProblems) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.problems)
}

// watch records the problems of the context's tab. It runs on the tab's reader: it only
// appends under a lock.
func (p *pageProblems) watch(ev any) {
	switch ev := ev.(type) {
	case *network.EventLoadingFailed:
		// A request the page itself gave up (an image of a page navigated away from, a
		// superseded scan) is not a failure.
		if !ev.Canceled {
			p.add("request %s failed: %s %s", ev.RequestID, ev.ErrorText, ev.BlockedReason)
		}
	case *network.EventResponseReceived:
		if ev.Response.Status >= 400 {
			p.add("%s answered %d", ev.Response.URL, ev.Response.Status)
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			p.add("console.%s: %s", ev.Type, strings.Join(parts, " "))
		}
	case *runtime.EventExceptionThrown:
		p.add("uncaught exception: %s at %s:%d", ev.ExceptionDetails.Text, ev.ExceptionDetails.URL, ev.ExceptionDetails.LineNumber)
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == cdplog.EntryLevelError {
			p.add("browser log (%s): %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
		}
	}
}

// browser is one headless Chromium with one tab, watched for problems.
type browser struct {
	ctx      context.Context
	problems *pageProblems
	shots    string // where screenshots go
	docs     string // where the README's screenshots go; empty: nowhere
}

func newBrowser(t *testing.T, ctx context.Context) *browser {
	t.Helper()
	path := chromiumPath(t)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		// Without these Chromium reaches for the network at start, which is refused here.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 760),
	)
	bctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	b := &browser{ctx: bctx, problems: &pageProblems{}, shots: t.ArtifactDir()}
	if err := chromedp.Listen(bctx, b.problems.watch); err != nil {
		t.Fatalf("start chromium (%s): %v", path, err)
	}
	if _, err := chromedp.Call(bctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(bctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots go to %s", b.shots)
	return b
}

func (b *browser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		t.Fatalf("%s: %v (page problems so far: %v)", what, err, b.problems.list())
	}
}

func eval[T any](t *testing.T, b *browser, js string) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// until waits for a JavaScript condition on the page (polled on every frame, so no sleep
// stands for it); the timeout is a safety net.
func until(js string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(30*time.Second))
}

// photosLoaded holds once every shown image in view has loaded (those below it load
// lazily).
const photosLoaded = `[...document.images].filter(i => i.src && i.getClientRects().length && i.getBoundingClientRect().top < innerHeight)` +
	`.every(i => i.complete && i.naturalWidth > 0)`

// shot saves a screenshot of the viewport into the test's artifact directory (kept with go
// test -artifacts) and, when b.docs names a folder, a compact copy there.
func (b *browser) shot(t *testing.T, name string) {
	t.Helper()
	buf, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name), buf, 0o644); err != nil {
		t.Fatal(err)
	}
	if b.docs == "" {
		return
	}
	small, err := compactPNG(buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.docs, name), small, 0o644); err != nil {
		t.Fatal(err)
	}
}

// compactPNG re-encodes a screenshot with a palette (the web-safe colours, a grey ramp and
// the pages' own colours, so flat areas stay flat), dithered, at the best compression: small
// enough to commit.
func compactPNG(b []byte) ([]byte, error) {
	src, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	pal := slices.Clone(palette.WebSafe)
	for _, hex := range []uint32{0x1d2330, 0x5b6472, 0xd9dee6, 0xf6f7f9, 0x1f5f8b, 0x1d7a46, 0xa15c00,
		0xb3261e, 0xf0a500, 0xeef0f3, 0xeaf2f8, 0xfff4d6} {
		pal = append(pal, color.RGBA{uint8(hex >> 16), uint8(hex >> 8), uint8(hex), 0xff})
	}
	for i, n := 0, 256-len(pal); i < n; i++ {
		v := uint8(i * 255 / (n - 1))
		pal = append(pal, color.RGBA{v, v, v, 0xff})
	}
	dst := image.NewPaletted(src.Bounds(), pal)
	draw.FloydSteinberg.Draw(dst, dst.Bounds(), src, image.Point{})
	var out bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&out, dst); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// TestBrowser drives the pages in headless Chromium against a real server: the storefront
// (a product and its similar products, a search by a street photo, "not this"), the
// duplicate review (a decision that a reload shows honoured), the status page, a 375 px
// wide screen and the keyboard; no request may fail and nothing may be logged as an error.
func TestBrowser(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := newBrowser(t, ctx)
	f, cat := sharedServer(t, "browser")

	// The watch is live: a failing request and a console error on a page are seen.
	b.do(t, "make a page fail",
		chromedp.Navigate(f.base+"/status"),
		chromedp.Evaluate[chromedp.Void](`fetch('/v1/products/no-such-product').then(() => console.error('planted'))`, chromedp.EvalAwaitPromise),
	)
	if got := strings.Join(b.problems.list(), "\n"); !strings.Contains(got, "no-such-product answered 404") || !strings.Contains(got, "planted") {
		t.Fatalf("the page watch missed a 404 and a console error: %q", got)
	}
	b.problems.reset()

	t.Run("storefront and similar products", func(t *testing.T) {
		b.do(t, "open the storefront",
			chromedp.EmulateViewport(1000, 760),
			chromedp.Navigate(f.base+"/"),
			until(fmt.Sprintf(`document.querySelectorAll('#grid li.card').length === %d`, len(cat.products)+2)),
			until(photosLoaded),
		)
		if alts := eval[bool](t, b, `[...document.images].every(i => i.alt.length > 0)`); !alts {
			t.Error("an image of the storefront has no alt text")
		}
		if info := eval[string](t, b, `document.getElementById('page-info').textContent`); info != fmt.Sprintf("1–%d of %d", len(cat.products)+2, len(cat.products)+2) {
			t.Errorf("page info %q", info)
		}
		b.shot(t, "storefront.png")

		const id = "Oatly-Oat-Milk"
		b.do(t, "open a product and its similar products",
			chromedp.Click(chromedp.CSS(`#grid li[data-id="`+id+`"] a`)),
			// A query, unlike a poll, waits across the navigation.
			chromedp.WaitVisible(chromedp.CSS(`#similar li.card`)),
			until(`location.pathname === '/product'`),
			until(photosLoaded),
		)
		similar := eval[[]string](t, b, `[...document.querySelectorAll('#similar li.card')].map(e => e.dataset.id)`)
		if slices.Contains(similar, id) || len(similar) == 0 || similar[0] != exactDup {
			t.Errorf("similar products of %s: %v, want others, its re-upload first", id, similar)
		}
		if title := eval[string](t, b, `document.getElementById('title').textContent`); title != "Oatly Oat Milk" {
			t.Errorf("product title %q", title)
		}
		if thumbs := eval[int](t, b, `document.querySelectorAll('#thumbs button').length`); thumbs != len(cat.photos[id]) {
			t.Errorf("%d photo buttons, want %d", thumbs, len(cat.photos[id]))
		}
		b.shot(t, "product.png")
	})

	t.Run("search by a street photo", func(t *testing.T) {
		const id = "Oatly-Oat-Milk"
		b.do(t, "upload a street photo",
			chromedp.Navigate(f.base+"/"),
			until(`document.querySelectorAll('#grid li.card').length > 0`),
			chromedp.SetUploadFiles(chromedp.CSS(`#file`), []string{cat.street[id].Path}),
			until(`document.querySelectorAll('#results li.card').length > 0`),
			until(photosLoaded),
		)
		results := eval[[]string](t, b, `[...document.querySelectorAll('#results li.card')].map(e => e.dataset.id)`)
		if !slices.Contains(results, id) {
			t.Fatalf("the street photo of %s found %v", id, results)
		}
		if scores := eval[int](t, b, `document.querySelectorAll('#results .score').length`); scores != len(results) {
			t.Errorf("%d scores for %d results", scores, len(results))
		}
		b.shot(t, "search.png")
		// "Not this" on the re-upload: it leaves the results, and a chip says so.
		b.do(t, "reject a result",
			chromedp.Click(chromedp.CSS(`#results li[data-id="`+exactDup+`"] button.not-this`)),
			until(`!document.querySelector('#results li[data-id="`+exactDup+`"]') && document.querySelectorAll('#rejected .chip').length === 1 && document.querySelectorAll('#results li.card').length > 0`),
		)
	})

	t.Run("duplicate review", func(t *testing.T) {
		scanned := `/clusters? at threshold|No duplicates/.test(document.getElementById('status').textContent)`
		copyCluster := `article.cluster[data-ids="Bravo-Apple-Juice ` + copyDup + `"]`
		exactCluster := `article.cluster[data-ids="Oatly-Oat-Milk ` + exactDup + `"]`
		b.do(t, "open the review",
			chromedp.Navigate(f.base+"/duplicates"),
			until(scanned),
			until(`document.querySelector('`+copyCluster+` .keep') && document.querySelector('`+exactCluster+` .keep')`),
			until(photosLoaded),
		)
		if tier := eval[string](t, b, `document.querySelector('`+exactCluster+` .tier').textContent`); tier != "exact" {
			t.Errorf("the exact re-upload's cluster says %q", tier)
		}
		b.shot(t, "duplicates.png")
		b.do(t, "record not duplicates",
			chromedp.SendKeys(chromedp.CSS(`#reviewer`), "browser-test"),
			chromedp.Click(chromedp.CSS(copyCluster+` button.not-duplicates`)),
			until(`/Recorded/.test(document.querySelector('`+copyCluster+` .note').textContent)`),
			chromedp.Reload(),
			until(scanned),
			until(`document.querySelector('#decisions tbody tr')`),
		)
		if present := eval[bool](t, b, `!!document.querySelector('`+copyCluster+`')`); present {
			t.Error("after the decision and a reload the pair is still a cluster")
		}
		if present := eval[bool](t, b, `!!document.querySelector('`+exactCluster+`')`); !present {
			t.Error("the other cluster is gone too")
		}
		row := eval[string](t, b, `document.querySelector('#decisions tbody tr').textContent`)
		if !strings.Contains(row, "different") || !strings.Contains(row, copyDup) {
			t.Errorf("the recorded decision reads %q", row)
		}
	})

	t.Run("status", func(t *testing.T) {
		b.do(t, "open the status page",
			chromedp.Navigate(f.base+"/status"),
			until(`document.querySelectorAll('#counts tr').length > 0 && document.querySelectorAll('#errors tr').length > 0`),
		)
		counts := eval[string](t, b, `document.getElementById('counts').textContent`)
		if !strings.Contains(counts, fmt.Sprintf("Products%d", len(cat.products)+2)) {
			t.Errorf("status counts %q", counts)
		}
		if model := eval[string](t, b, `document.getElementById('model').textContent`); !strings.Contains(model, "mobilenetv2") {
			t.Errorf("model %q", model)
		}
		b.shot(t, "status.png")
	})

	t.Run("375 px wide", func(t *testing.T) {
		b.do(t, "narrow the screen", chromedp.EmulateViewport(375, 740))
		for _, page := range []struct{ path, ready string }{
			{"/", `document.querySelectorAll('#grid li.card').length > 0`},
			{"/product?id=Bravo-Apple-Juice", `document.querySelectorAll('#similar li.card').length > 0`},
			{"/duplicates", `document.querySelectorAll('article.cluster').length > 0`},
			{"/status", `document.querySelectorAll('#counts tr').length > 0`},
		} {
			b.do(t, "open "+page.path, chromedp.Navigate(f.base+page.path), until(page.ready))
			if w := eval[int](t, b, `document.documentElement.scrollWidth`); w > 375 {
				t.Errorf("%s is %d px wide on a 375 px screen", page.path, w)
			}
		}
		b.shot(t, "storefront-375.png") // the status page, last opened
		b.do(t, "back to a wide screen", chromedp.EmulateViewport(1000, 760))
	})

	t.Run("keyboard", func(t *testing.T) {
		b.do(t, "tab through the storefront",
			chromedp.Navigate(f.base+"/"),
			until(`document.querySelectorAll('#grid li.card').length > 0`),
			chromedp.KeyEvent(kb.Tab),
		)
		if first := eval[string](t, b, `document.activeElement.className`); first != "skip" {
			t.Errorf("the first Tab lands on %q, want the skip link", first)
		}
		// Tab on until the photo chooser has the focus: it is reachable by keyboard.
		for range 10 {
			if eval[string](t, b, `document.activeElement.id`) == "file" {
				return
			}
			b.do(t, "tab", chromedp.KeyEvent(kb.Tab))
		}
		t.Error("the photo chooser is not reachable with Tab")
	})

	if problems := b.problems.list(); len(problems) > 0 {
		t.Errorf("the pages had %d problems:\n  %s", len(problems), strings.Join(problems, "\n  "))
	}
}

// TestScreenshots takes the README's screenshots (docs/*.png) of a running server's pages:
// `make screenshots` runs it against the demo's catalogue (LOOKALIKE_SCREENSHOTS_URL, the
// storefront's URL; LOOKALIKE_SCREENSHOTS, the folder). Skipped without them.
func TestScreenshots(t *testing.T) {
	base, dir := os.Getenv("LOOKALIKE_SCREENSHOTS_URL"), os.Getenv("LOOKALIKE_SCREENSHOTS")
	if base == "" || dir == "" {
		t.Skip("takes the README's screenshots when LOOKALIKE_SCREENSHOTS_URL and LOOKALIKE_SCREENSHOTS are set (make screenshots)")
	}
	base = strings.TrimSuffix(base, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := newBrowser(t, ctx)
	b.docs = dir
	street := filepath.Join(filepath.Dir(loadCatalogue(t).street["Alpro-Blueberry-Soyghurt"].Path), "val__Alpro-Blueberry-Soyghurt_004.jpg")
	cards := `document.querySelectorAll('#grid li.card').length > 0`
	b.do(t, "storefront", chromedp.EmulateViewport(1000, 760), chromedp.Navigate(base+"/"), until(cards), until(photosLoaded))
	b.shot(t, "storefront.png")
	b.do(t, "search", chromedp.SetUploadFiles(chromedp.CSS(`#file`), []string{street}),
		until(`document.querySelectorAll('#results li.card').length > 0`), until(photosLoaded))
	b.shot(t, "search.png")
	b.do(t, "product", chromedp.Navigate(base+"/product?id=Oatly-Oat-Milk"), chromedp.WaitVisible(chromedp.CSS(`#similar li.card`)), until(photosLoaded))
	b.shot(t, "product.png")
	b.do(t, "duplicates", chromedp.Navigate(base+"/duplicates"),
		until(`/clusters? at threshold|No duplicates/.test(document.getElementById('status').textContent)`), until(photosLoaded))
	b.shot(t, "duplicates.png")
	b.do(t, "status", chromedp.Navigate(base+"/status"), until(`document.querySelectorAll('#counts tr').length > 0`))
	b.shot(t, "status.png")
	if problems := b.problems.list(); len(problems) > 0 {
		t.Errorf("the pages had problems: %v", problems)
	}
}

package embed

import (
	"context"
	"fmt"
	"image/jpeg"
	"io"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"lookalike/internal/dataset"
)

// Benchmarks of each stage between bytes and vector, on the shared photos. Run them on an
// otherwise idle machine, for example:
//
//	go test ./embed -run XXX -bench . -benchtime 2s
//
// The retrieval benchmark (BenchmarkResizeKernelRetrieval) embeds whole collections; run it
// once with -benchtime 1x.

// benchPhotos reads up to n photos of a collection into memory.
func benchPhotos(b *testing.B, collection string, n int) [][]byte {
	b.Helper()
	var out [][]byte
	for _, p := range photos(b, collection, n) {
		out = append(out, readFile(b, p.Path))
	}
	return out
}

func reportImagesPerSecond(b *testing.B, images int) {
	b.ReportMetric(float64(images)/b.Elapsed().Seconds(), "images/s")
}

// processCPU is the CPU time this process has used (user + system, all threads, ONNX
// Runtime's included). On a shared machine, CPU time per image is steadier than wall time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter reports CPU milliseconds per image when stopped.
type cpuMeter struct{ start time.Duration }

func startCPU() cpuMeter { return cpuMeter{processCPU()} }

func (m cpuMeter) report(b *testing.B, images int) {
	if images > 0 {
		b.ReportMetric(float64((processCPU()-m.start).Microseconds())/1000/float64(images), "cpu-ms/img")
	}
}

// BenchmarkDecode times decoding alone: image/jpeg at full size against libjpeg-turbo at
// full size, at power-of-two DCT scales (the default) and at any n/8 scale, each keeping
// the shorter side at least 256 px.
func BenchmarkDecode(b *testing.B) {
	for _, coll := range []string{dataset.PhotosClothing, dataset.PhotosABO} {
		files := benchPhotos(b, coll, 48)
		type variant struct {
			name string
			fn   func(data []byte) error
		}
		variants := []variant{
			{"go-full", func(data []byte) error {
				_, err := Decode(data, DecodeOptions{PureGo: true})
				return err
			}},
			{"turbo-full", func(data []byte) error {
				_, err := Decode(data, DecodeOptions{})
				return err
			}},
			{"turbo-scaled-pow2", func(data []byte) error {
				_, err := Decode(data, DecodeOptions{MinShortSide: 256})
				return err
			}},
			{"turbo-scaled-any", func(data []byte) error {
				_, w, h, err := DecodeConfig(data, Limits{})
				if err != nil {
					return err
				}
				_, _, _, err = turboDecodeScaled(data, w, h, turboScaleNum(w, h, 256, false))
				return err
			}},
		}
		for _, v := range variants {
			b.Run(coll+"/"+v.name, func(b *testing.B) {
				n, cpu := 0, startCPU()
				for b.Loop() {
					if err := v.fn(files[n%len(files)]); err != nil {
						b.Fatal(err)
					}
					n++
				}
				reportImagesPerSecond(b, n)
				cpu.report(b, n)
			})
		}
	}
}

// BenchmarkResize times resize-and-crop into the 224x224 canvas, per kernel, from what the
// default decoder hands over (libjpeg-turbo, power-of-two scaled).
func BenchmarkResize(b *testing.B) {
	for _, coll := range []string{dataset.PhotosClothing, dataset.PhotosABO} {
		var decoded []Decoded
		for _, f := range benchPhotos(b, coll, 16) {
			decoded = append(decoded, decodeWith(b, f, DecodeOptions{MinShortSide: 256}))
		}
		for _, k := range []string{KernelBiLinear, KernelApproxBiLinear, KernelCatmullRom} {
			b.Run(coll+"/"+k, func(b *testing.B) {
				s := DefaultSpec()
				s.Resize.Kernel = k
				p, err := NewPreprocessor(s)
				if err != nil {
					b.Fatal(err)
				}
				n, cpu := 0, startCPU()
				for b.Loop() {
					if _, err := p.Resize(decoded[n%len(decoded)]); err != nil {
						b.Fatal(err)
					}
					n++
				}
				reportImagesPerSecond(b, n)
				cpu.report(b, n)
			})
		}
	}
}

// BenchmarkPreprocess times the whole step from decoded pixels to tensor (resize, crop,
// normalise), the fused resampler against x/image's BiLinear canvas plus Normalize, from
// what the default decoder hands over.
func BenchmarkPreprocess(b *testing.B) {
	for _, coll := range []string{dataset.PhotosClothing, dataset.PhotosABO} {
		var decoded []Decoded
		for _, f := range benchPhotos(b, coll, 16) {
			decoded = append(decoded, decodeWith(b, f, DecodeOptions{MinShortSide: 256}))
		}
		for _, fused := range []bool{true, false} {
			name := coll + "/fused"
			if !fused {
				name = coll + "/x-image"
			}
			b.Run(name, func(b *testing.B) {
				p, err := NewPreprocessor(DefaultSpec())
				if err != nil {
					b.Fatal(err)
				}
				p.fused = fused
				tensor := make([]float32, DefaultSpec().TensorLen())
				n, cpu := 0, startCPU()
				for b.Loop() {
					if err := p.Into(tensor, decoded[n%len(decoded)]); err != nil {
						b.Fatal(err)
					}
					n++
				}
				reportImagesPerSecond(b, n)
				cpu.report(b, n)
			})
		}
	}
}

// BenchmarkNormalize times writing one canvas into the float tensor.
func BenchmarkNormalize(b *testing.B) {
	p, err := NewPreprocessor(DefaultSpec())
	if err != nil {
		b.Fatal(err)
	}
	canvas, err := p.Resize(decodeWith(b, benchPhotos(b, dataset.PhotosClothing, 1)[0], DecodeOptions{}))
	if err != nil {
		b.Fatal(err)
	}
	tensor := make([]float32, DefaultSpec().TensorLen())
	for b.Loop() {
		if err := p.Normalize(tensor, canvas); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInferenceRaw times the model alone on ready tensors, per batch size.
func BenchmarkInferenceRaw(b *testing.B) {
	e := openTest(b, Config{MaxBatch: 16})
	p, err := NewPreprocessor(e.Spec())
	if err != nil {
		b.Fatal(err)
	}
	files := benchPhotos(b, dataset.PhotosClothing, 16)
	L := e.Spec().TensorLen()
	tensors := make([]float32, len(files)*L)
	for i, f := range files {
		if err := p.Into(tensors[i*L:(i+1)*L], decodeWith(b, f, e.DecodeOptions())); err != nil {
			b.Fatal(err)
		}
	}
	for _, batch := range []int{1, 4, 8, 16} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			n, cpu := 0, startCPU()
			for b.Loop() {
				if _, err := e.RunBatch(context.Background(), tensors[:batch*L], batch); err != nil {
					b.Fatal(err)
				}
				n += batch
			}
			reportImagesPerSecond(b, n)
			cpu.report(b, n)
		})
	}
}

// BenchmarkEmbedEndToEnd times bytes in, vector out through EmbedBatch (decoding in
// parallel with the model), per collection and decoder.
func BenchmarkEmbedEndToEnd(b *testing.B) {
	for _, coll := range []string{dataset.PhotosClothing, dataset.PhotosABO} {
		files := benchPhotos(b, coll, 64)
		for _, pure := range []bool{false, true} {
			name := coll + "/libjpeg-turbo"
			if pure {
				name = coll + "/go"
			}
			b.Run(name, func(b *testing.B) {
				e := openTest(b, Config{PureGoDecode: pure})
				n, cpu := 0, startCPU()
				for b.Loop() {
					_, errs := e.EmbedBatch(context.Background(), files)
					for _, err := range errs {
						if err != nil {
							b.Fatal(err)
						}
					}
					n += len(files)
				}
				reportImagesPerSecond(b, n)
				cpu.report(b, n)
			})
		}
	}
}

// analyzeAll runs fn over every file from as many goroutines as EmbedBatch uses, so that
// the model and the decoders are as busy as in a bulk import.
func analyzeAll(b *testing.B, e *Embedder, files [][]byte, fn func(data []byte) error) {
	next := make(chan []byte)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range min(len(files), e.cfg.MaxBatch*e.cfg.Sessions+e.cfg.DecodeWorkers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range next {
				if err := fn(f); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for _, f := range files {
		next <- f
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// BenchmarkAnalyze times bytes in, results out for Embed, Analyze (vector and perceptual
// hash) and Analyze with Keep (and the kept photo), from parallel callers as in a bulk
// import. The differences in cpu-ms/img are what the hash and the kept photo cost;
// BenchmarkPHash and BenchmarkKeep time them alone.
func BenchmarkAnalyze(b *testing.B) {
	for _, coll := range []string{dataset.PhotosClothing, dataset.PhotosABO} {
		files := benchPhotos(b, coll, 64)
		e := openTest(b, Config{})
		variants := []struct {
			name string
			fn   func(data []byte) error
		}{
			{"embed", func(data []byte) error { _, err := e.Embed(context.Background(), data); return err }},
			{"analyze", func(data []byte) error {
				_, err := e.Analyze(context.Background(), data, AnalyzeOptions{})
				return err
			}},
			{"analyze-keep", func(data []byte) error {
				_, err := e.Analyze(context.Background(), data, AnalyzeOptions{Keep: true})
				return err
			}},
		}
		for _, v := range variants {
			b.Run(coll+"/"+v.name, func(b *testing.B) {
				n, cpu := 0, startCPU()
				for b.Loop() {
					analyzeAll(b, e, files, v.fn)
					n += len(files)
				}
				reportImagesPerSecond(b, n)
				cpu.report(b, n)
			})
		}
	}
}

// BenchmarkPHash times the perceptual hash of what the default decoder hands over.
func BenchmarkPHash(b *testing.B) {
	for _, coll := range []string{dataset.PhotosClothing, dataset.PhotosGrocery, dataset.PhotosABO} {
		var decoded []Decoded
		for _, f := range benchPhotos(b, coll, 16) {
			decoded = append(decoded, decodeWith(b, f, DecodeOptions{MinShortSide: 256}))
		}
		b.Run(coll, func(b *testing.B) {
			n, cpu := 0, startCPU()
			for b.Loop() {
				phashDecoded(decoded[n%len(decoded)])
				n++
			}
			reportImagesPerSecond(b, n)
			cpu.report(b, n)
		})
	}
}

// BenchmarkKeep times the kept photo (resize, turn, JPEG encode) of what the default
// decoder hands over, and the libjpeg-turbo encoding against image/jpeg's alone.
func BenchmarkKeep(b *testing.B) {
	for _, coll := range []string{dataset.PhotosClothing, dataset.PhotosGrocery, dataset.PhotosABO} {
		var decoded []Decoded
		for _, f := range benchPhotos(b, coll, 16) {
			decoded = append(decoded, decodeWith(b, f, DecodeOptions{MinShortSide: 256}))
		}
		p, err := NewPreprocessor(DefaultSpec())
		if err != nil {
			b.Fatal(err)
		}
		w := &prepWorker{prep: p}
		b.Run(coll+"/keep", func(b *testing.B) {
			n, cpu := 0, startCPU()
			for b.Loop() {
				if _, err := w.keep(decoded[n%len(decoded)], DefaultSpec()); err != nil {
					b.Fatal(err)
				}
				n++
			}
			reportImagesPerSecond(b, n)
			cpu.report(b, n)
		})
		if _, err := w.keep(decoded[0], DefaultSpec()); err != nil {
			b.Fatal(err)
		}
		canvas := w.kept
		encoders := []struct {
			name string
			fn   func() error
		}{
			{"encode-libjpeg-turbo", func() error { _, err := turboEncode(canvas, KeptQuality); return err }},
			{"encode-image-jpeg", func() error {
				return jpeg.Encode(io.Discard, canvas, &jpeg.Options{Quality: KeptQuality})
			}},
		}
		for _, enc := range encoders {
			b.Run(coll+"/"+enc.name, func(b *testing.B) {
				n, cpu := 0, startCPU()
				for b.Loop() {
					if err := enc.fn(); err != nil {
						b.Fatal(err)
					}
					n++
				}
				cpu.report(b, n)
			})
		}
	}
}

// BenchmarkEmbedSplit reports, for one image at a time, the share of decode, resize,
// normalise and inference in the end-to-end time, on each collection.
func BenchmarkEmbedSplit(b *testing.B) {
	e := openTest(b, Config{MaxBatch: 1})
	for _, coll := range []string{dataset.PhotosClothing, dataset.PhotosABO} {
		files := benchPhotos(b, coll, 32)
		b.Run(coll, func(b *testing.B) {
			p, err := NewPreprocessor(e.Spec())
			if err != nil {
				b.Fatal(err)
			}
			tensor := make([]float32, e.Spec().TensorLen())
			var dec, rsz, norm, inf time.Duration
			n := 0
			for b.Loop() {
				f := files[n%len(files)]
				t0 := time.Now()
				d, err := Decode(f, e.DecodeOptions())
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				canvas, err := p.Resize(d)
				if err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				if err := p.Normalize(tensor, canvas); err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				if _, err := e.RunBatch(context.Background(), tensor, 1); err != nil {
					b.Fatal(err)
				}
				t4 := time.Now()
				dec, rsz, norm, inf = dec+t1.Sub(t0), rsz+t2.Sub(t1), norm+t3.Sub(t2), inf+t4.Sub(t3)
				n++
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) / 1000 }
			b.ReportMetric(per(dec), "decode-ms/img")
			b.ReportMetric(per(rsz), "resize-ms/img")
			b.ReportMetric(per(norm), "normalize-ms/img")
			b.ReportMetric(per(inf), "infer-ms/img")
		})
	}
}

// BenchmarkResizeKernelRetrieval measures retrieval quality per resize kernel with the real
// model: grocery street-to-shop recall@1 and recall@5 (a street photo's query against the
// catalogue images and the other photos; a hit is any image of the same product) and
// clothing precision@10 (same garment class). Run with -benchtime 1x.
func BenchmarkResizeKernelRetrieval(b *testing.B) {
	grocery, err := dataset.LoadPhotos(dataset.PhotosGrocery)
	if err != nil {
		b.Fatal(err)
	}
	clothing, err := dataset.LoadPhotos(dataset.PhotosClothing)
	if err != nil {
		b.Fatal(err)
	}
	load := func(ph []dataset.Photo) [][]byte {
		out := make([][]byte, len(ph))
		for i, p := range ph {
			out[i] = readFile(b, p.Path)
		}
		return out
	}
	gFiles, cFiles := load(grocery), load(clothing)
	for _, k := range []string{KernelBiLinear, KernelApproxBiLinear, KernelCatmullRom} {
		b.Run(k, func(b *testing.B) {
			s := DefaultSpec()
			s.Resize.Kernel = k
			e := openTest(b, Config{Spec: &s})
			for b.Loop() {
				gv := embedAllParallel(b, e, gFiles)
				cv := embedAllParallel(b, e, cFiles)
				r1, r5 := groceryRecall(grocery, gv)
				b.ReportMetric(r1, "grocery-recall@1")
				b.ReportMetric(r5, "grocery-recall@5")
				b.ReportMetric(precisionAt(clothing, cv, 10), "clothing-p@10")
			}
		})
	}
}

func embedAllParallel(b *testing.B, e *Embedder, files [][]byte) [][]float32 {
	vecs, errs := e.EmbedBatch(context.Background(), files)
	for i, err := range errs {
		if err != nil {
			b.Fatalf("image %d: %v", i, err)
		}
	}
	return vecs
}

// ranked returns the indices of all vectors but q, best first by cosine.
func ranked(vecs [][]float32, q int) []int {
	type hit struct {
		i int
		s float64
	}
	hits := make([]hit, 0, len(vecs)-1)
	for i, v := range vecs {
		if i != q {
			hits = append(hits, hit{i, cosine(vecs[q], v)})
		}
	}
	sort.Slice(hits, func(a, b int) bool { return hits[a].s > hits[b].s })
	out := make([]int, len(hits))
	for i, h := range hits {
		out[i] = h.i
	}
	return out
}

func groceryRecall(ph []dataset.Photo, vecs [][]float32) (at1, at5 float64) {
	queries := 0
	for q := range ph {
		if ph[q].Fields["is_iconic"] == "1" {
			continue
		}
		queries++
		r := ranked(vecs, q)
		for k, i := range r[:5] {
			if ph[i].Label == ph[q].Label {
				if k == 0 {
					at1++
				}
				at5++
				break
			}
		}
	}
	return at1 / float64(queries), at5 / float64(queries)
}

func precisionAt(ph []dataset.Photo, vecs [][]float32, k int) float64 {
	var sum float64
	for q := range ph {
		same := 0
		for _, i := range ranked(vecs, q)[:k] {
			if ph[i].Label == ph[q].Label {
				same++
			}
		}
		sum += float64(same) / float64(k)
	}
	return sum / float64(len(ph))
}

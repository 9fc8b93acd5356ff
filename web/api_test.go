package web_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "lookalike/proto/lookalike/v1"
	"lookalike/web"
)

// decode reads a JSON response body into m, failing the test on a status other than want.
func decode(t *testing.T, resp *http.Response, body []byte, want int, m proto.Message) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, want, body)
	}
	if m == nil {
		return
	}
	if err := protojson.Unmarshal(body, m); err != nil {
		t.Fatalf("%s %s: body %.300s: %v", resp.Request.Method, resp.Request.URL.Path, body, err)
	}
}

// form builds a multipart body: the photo in the part "image" (if any) and fields.
func form(t testing.TB, image []byte, fields ...string) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	if image != nil {
		part, err := w.CreateFormFile("image", "photo.jpg")
		if err != nil {
			t.Fatal(err)
		}
		part.Write(image)
	}
	for i := 0; i+1 < len(fields); i += 2 {
		w.WriteField(fields[i], fields[i+1])
	}
	w.Close()
	return &buf, w.FormDataContentType()
}

func jsonBody(t testing.TB, v any) *bytes.Reader {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(b)
}

func resultIDs(rs []*pb.SearchResult) []string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.GetProduct().GetId())
	}
	return ids
}

// TestEveryRPCHasARoute: the HTTP rules cover the whole service, so an RPC added to the proto
// without its rule (one line in lookalike_http.yaml) fails here.
func TestEveryRPCHasARoute(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(pb.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	routed := map[string]bool{}
	for _, ops := range doc.Paths {
		for _, op := range ops {
			routed[op.OperationID] = true
		}
	}
	methods := pb.File_lookalike_v1_lookalike_proto.Services().ByName("Lookalike").Methods()
	for i := range methods.Len() {
		if name := "Lookalike_" + string(methods.Get(i).Name()); !routed[name] {
			t.Errorf("RPC %s has no HTTP rule in proto/lookalike/v1/lookalike_http.yaml", methods.Get(i).Name())
		}
	}
}

// TestRoutes calls every route of the API on a real server: the success and the failures a
// client meets, with their HTTP statuses and gRPC codes.
func TestRoutes(t *testing.T) {
	f, cat := sharedServer(t, "api")
	street := cat.street["Oatly-Oat-Milk"]
	streetBytes, err := os.ReadFile(street.Path)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ListProducts", func(t *testing.T) {
		var seen []string
		token := ""
		for page := 0; ; page++ {
			resp, body := f.do(t, f.request(t, "GET", "/v1/products?page_size=3&page_token="+url.QueryEscape(token), nil))
			var out pb.ListProductsResponse
			decode(t, resp, body, 200, &out)
			if out.GetTotalSize() != uint64(len(cat.products)+2) && page == 0 {
				// other subtests add products later; the first page comes first
				t.Errorf("total_size %d, want %d", out.GetTotalSize(), len(cat.products)+2)
			}
			for _, p := range out.GetProducts() {
				seen = append(seen, p.GetId())
			}
			if token = out.GetNextPageToken(); token == "" {
				break
			}
		}
		if !slices.IsSorted(seen) || len(seen) < len(cat.products)+2 {
			t.Errorf("pages gave %v, want every product in id order", seen)
		}
		resp, body := f.do(t, f.request(t, "GET", "/v1/products?filter.categories=Juice", nil))
		var juice pb.ListProductsResponse
		decode(t, resp, body, 200, &juice)
		for _, p := range juice.GetProducts() {
			if p.GetCategory() != "Juice" {
				t.Errorf("category filter let %s (%s) through", p.GetId(), p.GetCategory())
			}
		}
		if len(juice.GetProducts()) < 3 {
			t.Errorf("%d juices, want at least 3", len(juice.GetProducts()))
		}
		for _, bad := range []string{"page_size=5000", "page_token=%25%25", "page_size=abc"} {
			resp, body := f.do(t, f.request(t, "GET", "/v1/products?"+bad, nil))
			if e := decodeError(t, body); resp.StatusCode != 400 || e.Code != 3 {
				t.Errorf("%s: %d %+v, want 400 INVALID_ARGUMENT", bad, resp.StatusCode, e)
			}
		}
	})

	t.Run("Get", func(t *testing.T) {
		resp, body := f.do(t, f.request(t, "GET", "/v1/products/Oatly-Oat-Milk", nil))
		var out pb.GetResponse
		decode(t, resp, body, 200, &out)
		if got := out.GetProduct(); got.GetId() != "Oatly-Oat-Milk" || len(got.GetPhotos()) != len(cat.photos["Oatly-Oat-Milk"]) || len(got.GetVector()) != 0 {
			t.Errorf("got %s with %d photos and a %d-d vector", got.GetId(), len(got.GetPhotos()), len(got.GetVector()))
		}
		if !strings.Contains(string(body), `"image_sha256"`) {
			t.Errorf("the body does not use the proto's field names: %.200s", body)
		}
		resp, body = f.do(t, f.request(t, "GET", "/v1/products/Oatly-Oat-Milk?include_vector=true", nil))
		decode(t, resp, body, 200, &out)
		if len(out.GetProduct().GetVector()) != 1280 {
			t.Errorf("include_vector gave a %d-d vector", len(out.GetProduct().GetVector()))
		}
		resp, body = f.do(t, f.request(t, "GET", "/v1/products/no-such-product", nil))
		if e := decodeError(t, body); resp.StatusCode != 404 || e.Code != 5 || !strings.Contains(e.Message, "no-such-product") {
			t.Errorf("unknown id: %d %+v, want 404 NOT_FOUND naming it", resp.StatusCode, e)
		}
	})

	t.Run("UpsertAndDelete", func(t *testing.T) {
		// An id with a slash, a space and a non-ASCII letter travels escaped in the path.
		id := "sku/7 ä"
		path := "/v1/products/" + url.PathEscape(id) // sku%2F7%20%C3%A4
		req := f.request(t, "PUT", path, jsonBody(t, map[string]any{
			"image": base64.StdEncoding.EncodeToString(cat.iconic["Arla-Sour-Cream"]), "category": "Test",
			"title": "Slash product", "attributes": map[string]string{"colour": "white"}, "photo_id": "front",
		}), "Content-Type", "application/json")
		resp, body := f.do(t, req)
		var res pb.UpsertResult
		decode(t, resp, body, 200, &res)
		if res.GetId() != id || res.GetOutcome() != pb.Outcome_OUTCOME_CREATED || res.GetEmbedded() != 1 {
			t.Errorf("upsert: %v", &res)
		}
		resp, body = f.do(t, f.request(t, "GET", path, nil))
		var got pb.GetResponse
		decode(t, resp, body, 200, &got)
		if got.GetProduct().GetId() != id || got.GetProduct().GetAttributes()["colour"] != "white" {
			t.Errorf("read back %v", got.GetProduct())
		}
		// The same photo as multipart, with metadata as form fields: unchanged photo, new title.
		buf, ct := form(t, cat.iconic["Arla-Sour-Cream"], "photo_id", "front", "category", "Test", "title", "Renamed", "attributes[colour]", "white")
		resp, body = f.do(t, f.request(t, "PUT", path, buf, "Content-Type", ct))
		decode(t, resp, body, 200, &res)
		if res.GetOutcome() != pb.Outcome_OUTCOME_UPDATED || res.GetEmbedded() != 0 {
			t.Errorf("multipart re-upsert: %v, want UPDATED without embedding", &res)
		}
		for _, c := range []struct {
			name, body, ct string
			status, code   int
		}{
			{"undecodable photo", `{"image": "` + base64.StdEncoding.EncodeToString([]byte("not a photo")) + `"}`, "application/json", 400, 3},
			{"unknown field", `{"imagee": "AAAA"}`, "application/json", 400, 3},
			{"not JSON", `{"image": `, "application/json", 400, 3},
		} {
			resp, body := f.do(t, f.request(t, "PUT", "/v1/products/bad-item", strings.NewReader(c.body), "Content-Type", c.ct))
			if e := decodeError(t, body); resp.StatusCode != c.status || e.Code != c.code {
				t.Errorf("%s: %d %+v, want %d code %d", c.name, resp.StatusCode, e, c.status, c.code)
			}
		}
		resp, body = f.do(t, f.request(t, "DELETE", path, nil))
		var del pb.DeleteResponse
		decode(t, resp, body, 200, &del)
		if del.GetProduct().GetTitle() != "Renamed" {
			t.Errorf("delete returned %v", del.GetProduct())
		}
		resp, body = f.do(t, f.request(t, "DELETE", path, nil))
		if e := decodeError(t, body); resp.StatusCode != 404 || e.Code != 5 {
			t.Errorf("second delete: %d %+v, want 404", resp.StatusCode, e)
		}
	})

	t.Run("UpsertStream", func(t *testing.T) {
		var lines bytes.Buffer
		for i, item := range []map[string]any{
			{"id": "stream-1", "image": base64.StdEncoding.EncodeToString(cat.iconic["Yoggi-Vanilla-Yoghurt"]), "category": "Test"},
			{"id": "stream-2"}, // no photo: this item fails, the stream goes on
			{"id": "stream-3", "image": base64.StdEncoding.EncodeToString(reencode(t, cat.iconic["Yoggi-Vanilla-Yoghurt"], 60)), "category": "Test"},
		} {
			b, _ := json.Marshal(item)
			lines.Write(b)
			if i < 2 {
				lines.WriteByte('\n')
			}
		}
		resp, body := f.do(t, f.request(t, "POST", "/v1/products", &lines, "Content-Type", "application/json"))
		if resp.StatusCode != 200 {
			t.Fatalf("stream: %d %s", resp.StatusCode, body)
		}
		results, err := ndjson(body)
		if err != nil || len(results) != 3 {
			t.Fatalf("stream answered %d results (%v): %s", len(results), err, body)
		}
		want := []pb.Outcome{pb.Outcome_OUTCOME_CREATED, pb.Outcome_OUTCOME_FAILED, pb.Outcome_OUTCOME_CREATED}
		for i, raw := range results {
			var r pb.UpsertResult
			if err := protojson.Unmarshal(raw, &r); err != nil {
				t.Fatal(err)
			}
			if r.GetOutcome() != want[i] || r.GetIndex() != uint64(i) {
				t.Errorf("result %d: %v, want %v", i, &r, want[i])
			}
			if i == 1 && r.GetErrorCode() != 3 {
				t.Errorf("the failed item's code is %d, want 3", r.GetErrorCode())
			}
		}
		for _, id := range []string{"stream-1", "stream-3"} {
			f.do(t, f.request(t, "DELETE", "/v1/products/"+id, nil))
		}
	})

	t.Run("GetPhoto", func(t *testing.T) {
		path := "/v1/products/" + exactDup + "/photos/main"
		resp, img := f.do(t, f.request(t, "GET", path, nil))
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/jpeg" {
			t.Fatalf("photo: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		sum := sha256.Sum256(img)
		etag := `"` + hex.EncodeToString(sum[:]) + `"`
		if resp.Header.Get("ETag") != etag {
			t.Errorf("ETag %s, want the SHA-256 of the bytes, %s", resp.Header.Get("ETag"), etag)
		}
		if !strings.Contains(resp.Header.Get("Cache-Control"), "max-age=") || resp.Header.Get("Last-Modified") == "" {
			t.Errorf("caching headers: Cache-Control %q, Last-Modified %q", resp.Header.Get("Cache-Control"), resp.Header.Get("Last-Modified"))
		}
		resp, body := f.do(t, f.request(t, "GET", path, nil, "If-None-Match", etag))
		if resp.StatusCode != 304 || len(body) != 0 {
			t.Errorf("If-None-Match: %d with %d bytes, want 304", resp.StatusCode, len(body))
		}
		resp, body = f.do(t, f.request(t, "HEAD", path, nil))
		if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != int64(len(img)) {
			t.Errorf("HEAD: %d, %d bytes, length %d", resp.StatusCode, len(body), resp.ContentLength)
		}
		resp, body = f.do(t, f.request(t, "GET", path, nil, "Accept", "application/json"))
		var out pb.GetPhotoResponse
		decode(t, resp, body, 200, &out)
		if !bytes.Equal(out.GetImage(), img) || out.GetPhoto().GetId() != "main" {
			t.Errorf("JSON form: %d bytes, photo %q", len(out.GetImage()), out.GetPhoto().GetId())
		}
		for _, p := range []string{"/v1/products/" + exactDup + "/photos/nope", "/v1/products/nope/photos/main"} {
			resp, body = f.do(t, f.request(t, "GET", p, nil))
			if e := decodeError(t, body); resp.StatusCode != 404 || e.Code != 5 {
				t.Errorf("%s: %d %+v, want a JSON 404", p, resp.StatusCode, e)
			}
		}
	})

	t.Run("SearchByImage", func(t *testing.T) {
		check := func(name string, resp *http.Response, body []byte) {
			t.Helper()
			var out pb.SearchResponse
			decode(t, resp, body, 200, &out)
			ids := resultIDs(out.GetResults())
			if !slices.Contains(ids, "Oatly-Oat-Milk") {
				t.Errorf("%s: the street photo of Oatly-Oat-Milk found %v", name, ids)
			}
			for _, r := range out.GetResults() {
				if r.GetScore() <= 0 || r.GetPhotoId() == "" {
					t.Errorf("%s: result %s without score or photo", name, r.GetProduct().GetId())
				}
			}
		}
		buf, ct := form(t, streetBytes, "k", "5")
		resp, body := f.do(t, f.request(t, "POST", "/v1/search/image", buf, "Content-Type", ct))
		check("multipart", resp, body)
		resp, body = f.do(t, f.request(t, "POST", "/v1/search/image?k=5", bytes.NewReader(streetBytes), "Content-Type", "image/jpeg"))
		check("raw", resp, body)
		resp, body = f.do(t, f.request(t, "POST", "/v1/search/image", jsonBody(t, map[string]any{"image": streetBytes, "k": 5}), "Content-Type", "application/json"))
		check("JSON", resp, body)

		// Filters and ranking options as form fields, with the query parameters' names.
		buf, ct = form(t, streetBytes, "k", "10", "filter.categories", "Juice", "filter.attributes[brand]", "Bravo", "not_like", copyDup, "diversity", "0.5")
		resp, body = f.do(t, f.request(t, "POST", "/v1/search/image", buf, "Content-Type", ct))
		var out pb.SearchResponse
		decode(t, resp, body, 200, &out)
		if ids := resultIDs(out.GetResults()); !slices.Equal(ids, []string{"Bravo-Apple-Juice"}) {
			t.Errorf("filtered search found %v, want only Bravo-Apple-Juice", ids)
		}

		for _, c := range []struct {
			name   string
			req    *http.Request
			status int
			code   int
		}{
			{"k out of range", func() *http.Request {
				buf, ct := form(t, streetBytes, "k", "0")
				return f.request(t, "POST", "/v1/search/image", buf, "Content-Type", ct)
			}(), 400, 3},
			{"no photo", func() *http.Request {
				buf, ct := form(t, nil, "k", "3")
				return f.request(t, "POST", "/v1/search/image", buf, "Content-Type", ct)
			}(), 400, 3},
			{"not a photo", f.request(t, "POST", "/v1/search/image?k=3", strings.NewReader("hello"), "Content-Type", "image/png"), 400, 3},
			{"unknown field", func() *http.Request {
				buf, ct := form(t, streetBytes, "kk", "3")
				return f.request(t, "POST", "/v1/search/image", buf, "Content-Type", ct)
			}(), 400, 3},
			{"two photos", func() *http.Request {
				var b bytes.Buffer
				w := multipart.NewWriter(&b)
				for range 2 {
					p, _ := w.CreateFormFile("image", "x.jpg")
					p.Write(streetBytes)
				}
				w.Close()
				return f.request(t, "POST", "/v1/search/image", &b, "Content-Type", w.FormDataContentType())
			}(), 400, 3},
			{"over the size limit", f.request(t, "POST", "/v1/search/image?k=3", bytes.NewReader(make([]byte, 33<<20)), "Content-Type", "image/jpeg"), 413, 3},
		} {
			resp, body := f.do(t, c.req)
			if e := decodeError(t, body); resp.StatusCode != c.status || e.Code != c.code || e.Message == "" {
				t.Errorf("%s: %d %+v, want %d with code %d and a message", c.name, resp.StatusCode, e, c.status, c.code)
			}
		}
	})

	t.Run("SearchById", func(t *testing.T) {
		resp, body := f.do(t, f.request(t, "GET", "/v1/products/Oatly-Oat-Milk/similar?k=3", nil))
		var out pb.SearchResponse
		decode(t, resp, body, 200, &out)
		ids := resultIDs(out.GetResults())
		if len(ids) != 3 || slices.Contains(ids, "Oatly-Oat-Milk") || ids[0] != exactDup {
			t.Errorf("more like Oatly-Oat-Milk: %v, want 3 others, its exact duplicate first", ids)
		}
		resp, body = f.do(t, f.request(t, "GET", "/v1/products/Oatly-Oat-Milk/similar?k=3&not_like="+exactDup+"&group_by=brand&diversity=0.3", nil))
		decode(t, resp, body, 200, &out)
		if ids := resultIDs(out.GetResults()); slices.Contains(ids, exactDup) || len(ids) == 0 {
			t.Errorf("not_like %s: %v", exactDup, ids)
		}
		for _, c := range []struct {
			q            string
			status, code int
		}{{"k=0", 400, 3}, {"k=3&diversity=2", 400, 3}, {"k=x", 400, 3}} {
			resp, body := f.do(t, f.request(t, "GET", "/v1/products/Oatly-Oat-Milk/similar?"+c.q, nil))
			if e := decodeError(t, body); resp.StatusCode != c.status || e.Code != c.code {
				t.Errorf("%s: %d %+v", c.q, resp.StatusCode, e)
			}
		}
		resp, body = f.do(t, f.request(t, "GET", "/v1/products/nope/similar?k=3", nil))
		if e := decodeError(t, body); resp.StatusCode != 404 || e.Code != 5 {
			t.Errorf("unknown id: %d %+v", resp.StatusCode, e)
		}
	})

	t.Run("SearchByVector", func(t *testing.T) {
		resp, body := f.do(t, f.request(t, "GET", "/v1/products/Bravo-Apple-Juice?include_vector=true", nil))
		var got pb.GetResponse
		decode(t, resp, body, 200, &got)
		resp, body = f.do(t, f.request(t, "POST", "/v1/search/vector", jsonBody(t, map[string]any{"vector": got.GetProduct().GetVector(), "k": 2}), "Content-Type", "application/json"))
		var out pb.SearchResponse
		decode(t, resp, body, 200, &out)
		if ids := resultIDs(out.GetResults()); len(ids) != 2 || ids[0] != "Bravo-Apple-Juice" {
			t.Errorf("its own vector found %v", ids)
		}
		resp, body = f.do(t, f.request(t, "POST", "/v1/search/vector", jsonBody(t, map[string]any{"vector": []float32{1, 2, 3}, "k": 2}), "Content-Type", "application/json"))
		if e := decodeError(t, body); resp.StatusCode != 400 || e.Code != 3 {
			t.Errorf("wrong dimension: %d %+v", resp.StatusCode, e)
		}
	})

	t.Run("FindDuplicates", func(t *testing.T) {
		resp, body := f.do(t, f.request(t, "GET", "/v1/duplicates", nil))
		results, err := ndjson(body)
		if resp.StatusCode != 200 || err != nil {
			t.Fatalf("scan: %d %v %s", resp.StatusCode, err, body)
		}
		tiers := map[string]pb.Tier{}
		for _, raw := range results {
			var c pb.DuplicateCluster
			if err := protojson.Unmarshal(raw, &c); err != nil {
				t.Fatal(err)
			}
			tiers[strings.Join(c.GetIds(), "+")] = c.GetTier()
			for _, e := range c.GetEdges() {
				if e.GetSignals() == nil || e.GetScore() < 0.9 {
					t.Errorf("edge %s~%s: score %v, signals %v", e.GetA(), e.GetB(), e.GetScore(), e.GetSignals())
				}
			}
		}
		if tiers["Oatly-Oat-Milk+"+exactDup] != pb.Tier_TIER_EXACT || tiers["Bravo-Apple-Juice+"+copyDup] != pb.Tier_TIER_COPY {
			t.Errorf("clusters %v, want the planted exact and copy duplicates", tiers)
		}
		_, body = f.do(t, f.request(t, "GET", "/v1/duplicates?min_tier=TIER_EXACT", nil))
		results, _ = ndjson(body)
		if len(results) != 1 {
			t.Errorf("min_tier=TIER_EXACT: %d clusters, want 1", len(results))
		}
		resp, body = f.do(t, f.request(t, "GET", "/v1/duplicates?threshold=2", nil))
		if e := errorOf(t, body); resp.StatusCode != 400 || e.Code != 3 || !strings.Contains(e.Message, "threshold") {
			t.Errorf("threshold 2: %d %+v, want 400 INVALID_ARGUMENT", resp.StatusCode, e)
		}
	})

	t.Run("CheckDuplicate", func(t *testing.T) {
		buf, ct := form(t, reencode(t, cat.iconic["Yoggi-Vanilla-Yoghurt"], 80))
		resp, body := f.do(t, f.request(t, "POST", "/v1/duplicates/check", buf, "Content-Type", ct))
		var out pb.CheckDuplicateResponse
		decode(t, resp, body, 200, &out)
		if !out.GetIsDuplicate() || out.GetBestMatch().GetProduct().GetId() != "Yoggi-Vanilla-Yoghurt" || out.GetTier() != pb.Tier_TIER_COPY {
			t.Errorf("a re-encoded catalogue photo: %v", &out)
		}
		resp, body = f.do(t, f.request(t, "POST", "/v1/duplicates/check?threshold=0.99", bytes.NewReader(streetBytes), "Content-Type", "image/jpeg"))
		decode(t, resp, body, 200, &out)
		if out.GetIsDuplicate() || out.GetThreshold() != float32(0.99) {
			t.Errorf("a street photo at 0.99: %v", &out)
		}
		resp, body = f.do(t, f.request(t, "POST", "/v1/duplicates/check", jsonBody(t, map[string]any{"image": streetBytes, "threshold": 3}), "Content-Type", "application/json"))
		if e := decodeError(t, body); resp.StatusCode != 400 || e.Code != 3 {
			t.Errorf("threshold 3: %d %+v", resp.StatusCode, e)
		}
	})

	t.Run("Decisions", func(t *testing.T) {
		// Who decides comes from the reviewer header when the body does not say.
		resp, body := f.do(t, f.request(t, "POST", "/v1/decisions", jsonBody(t, map[string]any{
			"ids": []string{"Arla-Sour-Cream", "Yoggi-Vanilla-Yoghurt"}, "verdict": "different", "note": "test",
		}), "Content-Type", "application/json", "X-Lookalike-Reviewer", "ana"))
		var res pb.ResolveDuplicatesResponse
		decode(t, resp, body, 200, &res)
		if len(res.GetDecisions()) != 1 || res.GetDecisions()[0].GetBy() != "ana" || res.GetDecisions()[0].GetVerdict() != "different" {
			t.Errorf("resolve: %v", &res)
		}
		resp, body = f.do(t, f.request(t, "POST", "/v1/decisions", jsonBody(t, map[string]any{"ids": []string{"a", "b"}, "verdict": "maybe"}), "Content-Type", "application/json"))
		if e := decodeError(t, body); resp.StatusCode != 400 || e.Code != 3 || !strings.Contains(e.Message, "verdict") {
			t.Errorf("bad verdict: %d %+v", resp.StatusCode, e)
		}
		resp, body = f.do(t, f.request(t, "GET", "/v1/decisions", nil))
		var list pb.ListDecisionsResponse
		decode(t, resp, body, 200, &list)
		if len(list.GetDecisions()) != 1 || list.GetDecisions()[0].GetNote() != "test" {
			t.Errorf("list: %v", &list)
		}
		d := list.GetDecisions()[0]
		path := "/v1/decisions/" + url.PathEscape(d.GetA()) + "/" + url.PathEscape(d.GetB())
		resp, body = f.do(t, f.request(t, "DELETE", path, nil))
		decode(t, resp, body, 200, &pb.ForgetDecisionResponse{})
		resp, body = f.do(t, f.request(t, "DELETE", path, nil))
		if e := decodeError(t, body); resp.StatusCode != 404 || e.Code != 5 {
			t.Errorf("forget twice: %d %+v", resp.StatusCode, e)
		}
	})

	t.Run("Calibrate", func(t *testing.T) {
		resp, body := f.do(t, f.request(t, "POST", "/v1/calibrate", jsonBody(t, map[string]any{"sample": 8, "seed": 1}), "Content-Type", "application/json"))
		var rep pb.CalibrateReport
		decode(t, resp, body, 200, &rep)
		if rep.GetPhotos() == 0 || rep.GetPositives() == 0 || rep.GetApplied() || rep.GetRecommended() == nil ||
			!strings.HasPrefix(rep.GetHeldOutEstimate().GetRule(), "fitting half alone: copy: ") {
			t.Errorf("calibration report: photos %d, positives %d, applied %v, estimate %q", rep.GetPhotos(), rep.GetPositives(), rep.GetApplied(), rep.GetHeldOutEstimate().GetRule())
		}
		resp, body = f.do(t, f.request(t, "POST", "/v1/calibrate", jsonBody(t, map[string]any{"sample": 100000}), "Content-Type", "application/json"))
		if e := decodeError(t, body); resp.StatusCode != 400 || e.Code != 3 {
			t.Errorf("sample too large: %d %+v", resp.StatusCode, e)
		}
	})

	t.Run("Backup", func(t *testing.T) {
		resp, body := f.do(t, f.request(t, "GET", "/v1/backup", nil))
		chunks, err := ndjson(body)
		if resp.StatusCode != 200 || err != nil || len(chunks) < 2 {
			t.Fatalf("backup: %d, %d chunks, %v", resp.StatusCode, len(chunks), err)
		}
		h := sha256.New()
		var complete *pb.BackupComplete
		for _, raw := range chunks {
			var c pb.BackupChunk
			if err := protojson.Unmarshal(raw, &c); err != nil {
				t.Fatal(err)
			}
			h.Write(c.GetData())
			if c.GetComplete() != nil {
				complete = c.GetComplete()
			}
		}
		if complete == nil || complete.GetSha256() != hex.EncodeToString(h.Sum(nil)) {
			t.Errorf("the chunks do not add up to the copy the server describes (%v)", complete)
		}
	})

	t.Run("Stats", func(t *testing.T) {
		// A failed call shows among the recent errors.
		f.do(t, f.request(t, "GET", "/v1/products/Oatly-Oat-Milk/similar?k=100000", nil))
		resp, body := f.do(t, f.request(t, "GET", "/v1/stats", nil))
		var st pb.StatsResponse
		decode(t, resp, body, 200, &st)
		if st.GetCount() < uint64(len(cat.products)) || st.GetDim() != 1280 || st.GetModelIdentity() == "" {
			t.Errorf("stats: %v", &st)
		}
		found := false
		for _, e := range st.GetRecentErrors() {
			found = found || (e.GetMethod() == "SearchById" && e.GetCode() == "INVALID_ARGUMENT" && strings.Contains(e.GetMessage(), "k is 100000"))
		}
		if !found {
			t.Errorf("recent errors %v lack the failed SearchById", st.GetRecentErrors())
		}
	})

	t.Run("HEAD", func(t *testing.T) {
		resp, body := f.do(t, f.request(t, "HEAD", "/v1/stats", nil))
		if resp.StatusCode != 200 || len(body) != 0 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("HEAD /v1/stats: %d, %d bytes, %s", resp.StatusCode, len(body), resp.Header.Get("Content-Type"))
		}
	})

	t.Run("Unrouted", func(t *testing.T) {
		resp, body := f.do(t, f.request(t, "POST", "/v1/stats", nil))
		if e := decodeError(t, body); resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" || e.Code != 12 {
			t.Errorf("POST /v1/stats: %d Allow %q %+v", resp.StatusCode, resp.Header.Get("Allow"), e)
		}
		resp, body = f.do(t, f.request(t, "GET", "/v1/nothing/here", nil))
		if e := decodeError(t, body); resp.StatusCode != 404 || e.Code != 5 {
			t.Errorf("unknown path: %d %+v", resp.StatusCode, e)
		}
	})

	t.Run("OpenAPI", func(t *testing.T) {
		resp, body := f.do(t, f.request(t, "GET", "/v1/openapi.json", nil))
		var doc struct {
			Swagger string                     `json:"swagger"`
			Paths   map[string]json.RawMessage `json:"paths"`
		}
		if err := json.Unmarshal(body, &doc); resp.StatusCode != 200 || err != nil || doc.Swagger != "2.0" || doc.Paths["/v1/search/image"] == nil {
			t.Errorf("openapi.json: %d %v %q, %d paths", resp.StatusCode, err, doc.Swagger, len(doc.Paths))
		}
	})
}

// TestPagesAndAssets: the pages are served with their assets, an ETag and a content policy.
func TestPagesAndAssets(t *testing.T) {
	f, _ := sharedServer(t, "api")
	for _, c := range []struct{ path, contentType, contains string }{
		{"/", "text/html", "Find a product by photo"},
		{"/product?id=x", "text/html", "Similar products"},
		{"/duplicates", "text/html", "Duplicate review"},
		{"/status", "text/html", "Recent errors"},
		{"/assets/app.css", "text/css", ":focus-visible"},
		{"/assets/api.js", "text/javascript", "export async function call"},
		{"/favicon.ico", "image/svg+xml", "<svg"},
		{"/ui/config.json", "application/json", "metrics_port"},
	} {
		resp, body := f.do(t, f.request(t, "GET", c.path, nil))
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), c.contentType) || !strings.Contains(string(body), c.contains) {
			t.Errorf("%s: %d %s, body has %q: %v", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), c.contains, strings.Contains(string(body), c.contains))
			continue
		}
		if etag := resp.Header.Get("ETag"); etag != "" {
			resp, _ := f.do(t, f.request(t, "GET", c.path, nil, "If-None-Match", etag))
			if resp.StatusCode != 304 {
				t.Errorf("%s with its ETag: %d, want 304", c.path, resp.StatusCode)
			}
		} else if c.path != "/ui/config.json" {
			t.Errorf("%s has no ETag", c.path)
		}
	}
	resp, _ := f.do(t, f.request(t, "GET", "/", nil))
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("the storefront's content security policy is %q", csp)
	}
	resp, _ = f.do(t, f.request(t, "GET", "/assets/nope.js", nil))
	if resp.StatusCode != 404 {
		t.Errorf("a missing asset: %d", resp.StatusCode)
	}
}

// TestCORS: off by default; with an origin configured, that origin's pages may call the API
// (preflight included) and others get no permission.
func TestCORS(t *testing.T) {
	off, _ := sharedServer(t, "api")
	resp, _ := off.do(t, off.request(t, "GET", "/v1/stats", nil, "Origin", "https://shop.example.com"))
	if h := resp.Header.Get("Access-Control-Allow-Origin"); h != "" {
		t.Errorf("CORS is off by default, yet Access-Control-Allow-Origin is %q", h)
	}
	resp, _ = off.do(t, off.request(t, "OPTIONS", "/v1/search/image", nil, "Origin", "https://shop.example.com", "Access-Control-Request-Method", "POST"))
	if resp.StatusCode == 204 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("a preflight without CORS: %d %v", resp.StatusCode, resp.Header)
	}

	on := startTemp(t, serverOptions{web: webConfig("https://shop.example.com")})
	cases := []struct {
		name, method, origin string
		header               []string
		status               int
		allowed              bool
	}{
		{"preflight", "OPTIONS", "https://shop.example.com", []string{"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization,content-type"}, 204, true},
		{"simple GET", "GET", "https://shop.example.com", nil, 200, true},
		{"another origin", "GET", "https://evil.example.com", nil, 200, false},
		{"another origin's preflight", "OPTIONS", "https://evil.example.com", []string{"Access-Control-Request-Method", "POST"}, 405, false},
	}
	for _, c := range cases {
		header := append([]string{"Origin", c.origin}, c.header...)
		resp, body := on.do(t, on.request(t, c.method, "/v1/stats", nil, header...))
		got := resp.Header.Get("Access-Control-Allow-Origin")
		if resp.StatusCode != c.status || (got == c.origin) != c.allowed || (got != "" && got != c.origin) {
			t.Errorf("%s: %d, Access-Control-Allow-Origin %q, want %d allowed=%v (%s)", c.name, resp.StatusCode, got, c.status, c.allowed, body)
		}
		if c.name == "preflight" && (!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") || !strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST")) {
			t.Errorf("preflight headers: %v", resp.Header)
		}
		if !strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), "Origin") {
			t.Errorf("%s: no Vary: Origin", c.name)
		}
	}
}

// TestCORSOriginsChecked: a malformed origin is refused when the front end is built.
func TestCORSOriginsChecked(t *testing.T) {
	for _, o := range []string{"shop.example.com", "https://shop.example.com/path", "ftp://x", "*"} {
		err := webConfig(o).Validate()
		if (err == nil) != (o == "*") {
			t.Errorf("origin %q: %v", o, err)
		}
	}
}

func webConfig(origins ...string) web.Config { return web.Config{CORSOrigins: origins} }

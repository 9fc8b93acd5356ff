package web

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"

	pb "lookalike/proto/lookalike/v1"
)

// photoMaxAge is how long a browser may show a kept photo without asking again; after it,
// the ETag makes the question cheap (304). A photo id whose bytes change is seen within it.
const photoMaxAge = 5 * time.Minute

// servePhoto answers GET /v1/products/{id}/photos/{photo_id} with the kept JPEG itself,
// through the GetPhoto RPC: ETag the SHA-256 of the bytes served, Last-Modified when the
// photo last changed, conditional and range requests answered by http.ServeContent. Errors
// come as the gateway's JSON body.
func (f *frontEnd) servePhoto(w http.ResponseWriter, r *http.Request, rt route) {
	ctx, err := runtime.AnnotateContext(r.Context(), f.gwmux, r, rt.fullMethod, runtime.WithHTTPPathPattern(rt.path))
	if err != nil {
		f.writeError(w, r, err)
		return
	}
	req := &pb.GetPhotoRequest{Id: r.PathValue("id"), PhotoId: r.PathValue("photo_id")}
	resp := &pb.GetPhotoResponse{}
	if err := f.gw.Conn.Invoke(ctx, rt.fullMethod, req, resp); err != nil {
		f.writeError(w, r, err)
		return
	}
	sum := sha256.Sum256(resp.GetImage())
	h := w.Header()
	h.Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
	h.Set("Content-Type", resp.GetContentType())
	cache := "public"
	if r.Header.Get("Authorization") != "" {
		cache = "private" // behind a token: not for shared caches
	}
	h.Set("Cache-Control", cache+", max-age="+strconv.Itoa(int(photoMaxAge/time.Second)))
	var modified time.Time
	if u := resp.GetPhoto().GetUpdated(); u != nil {
		modified = u.AsTime()
	}
	http.ServeContent(w, r, "", modified, bytes.NewReader(resp.GetImage()))
}

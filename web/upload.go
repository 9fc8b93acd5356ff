package web

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// maxFormFields bounds the non-photo parts of a multipart upload.
const maxFormFields = 256

// isUpload tells whether a request carries its photo as multipart/form-data or as raw bytes
// (Content-Type image/* or application/octet-stream) rather than as JSON.
func isUpload(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == "multipart/form-data" || strings.HasPrefix(mt, "image/") || mt == "application/octet-stream"
}

// serveUpload calls a route's RPC with the photo of a multipart form (the part named image)
// or of a raw body. The other fields of the request come from the form's other parts and the
// query string, with the names the gateway uses for query parameters (k, min_score,
// filter.categories, filter.attributes[colour], threshold...), so no field is translated by
// hand. The call, its answer and its errors are the gateway's.
func (f *frontEnd) serveUpload(w http.ResponseWriter, r *http.Request, rt route) {
	body, release, err := f.readBody(w, r, rt, f.uploadLimit)
	if err != nil {
		f.writeError(w, r, err)
		return
	}
	defer release()
	values := r.URL.Query()
	var image []byte
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "multipart/form-data" {
		image, err = readForm(body, params["boundary"], values)
		if err != nil {
			f.writeError(w, r, err)
			return
		}
	} else {
		image = body
	}
	if int64(len(image)) > int64(f.gw.MaxMessageBytes) {
		f.writeError(w, r, tooLarge(int64(f.gw.MaxMessageBytes)))
		return
	}
	if len(image) == 0 {
		f.writeError(w, r, status.Error(codes.InvalidArgument, `no photo: send it as the form part "image" or as the body`))
		return
	}

	// The path's values win over any field of the same name.
	for _, name := range rt.pathParams() {
		values.Set(name, r.PathValue(name))
	}
	req := newMessage(rt.rpc.Input())
	// The photo is never a query parameter or form field.
	if err := runtime.PopulateQueryParameters(req, values, utilities.NewDoubleArray([][]string{{"image"}})); err != nil {
		f.writeError(w, r, status.Error(codes.InvalidArgument, err.Error()))
		return
	}
	req.ProtoReflect().Set(rt.rpc.Input().Fields().ByName("image"), protoreflect.ValueOfBytes(image))
	f.invoke(w, r, rt, req)
}

// readForm reads a multipart body: the part named image is the photo, the others go into
// values as request fields.
func readForm(body []byte, boundary string, values url.Values) ([]byte, error) {
	if boundary == "" {
		return nil, status.Error(codes.InvalidArgument, "multipart/form-data without a boundary")
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	var image []byte
	fields := 0
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "reading the form: %v", err)
		}
		data, err := io.ReadAll(p)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "reading the form: %v", err)
		}
		name := p.FormName()
		switch {
		case name == "image":
			if image != nil {
				return nil, status.Error(codes.InvalidArgument, `more than one "image" part: one photo per request`)
			}
			image = data
		case p.FileName() != "":
			return nil, status.Errorf(codes.InvalidArgument, "the form has a file part %q; the photo goes in the part named image", name)
		case name == "":
			return nil, status.Error(codes.InvalidArgument, "a form part without a name")
		default:
			if fields++; fields > maxFormFields {
				return nil, status.Errorf(codes.InvalidArgument, "more than %d form fields", maxFormFields)
			}
			values.Add(name, string(data))
		}
	}
	return image, nil
}

// invoke calls the route's RPC with req and answers as the gateway does: the same metadata
// forwarded (Authorization, the reviewer, X-Forwarded-For), the same JSON and error body.
func (f *frontEnd) invoke(w http.ResponseWriter, r *http.Request, rt route, req proto.Message) {
	_, out := runtime.MarshalerForRequest(f.gwmux, r)
	ctx, err := runtime.AnnotateContext(r.Context(), f.gwmux, r, rt.fullMethod, runtime.WithHTTPPathPattern(rt.path))
	if err != nil {
		f.writeError(w, r, err)
		return
	}
	resp := newMessage(rt.rpc.Output())
	var header, trailer metadata.MD
	err = f.gw.Conn.Invoke(ctx, rt.fullMethod, req, resp, grpc.Header(&header), grpc.Trailer(&trailer))
	ctx = runtime.NewServerMetadataContext(ctx, runtime.ServerMetadata{HeaderMD: header, TrailerMD: trailer})
	if err != nil {
		runtime.HTTPError(ctx, f.gwmux, out, w, r, err)
		return
	}
	runtime.ForwardResponseMessage(ctx, f.gwmux, out, w, r, resp)
}

// newMessage makes an empty message of the generated type of md (registered by the
// lookalikev1 package).
func newMessage(md protoreflect.MessageDescriptor) proto.Message {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
	if err != nil {
		panic("web: no generated type for " + string(md.FullName()))
	}
	return mt.New().Interface()
}

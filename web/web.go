package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "lookalike/proto/lookalike/v1"
	"lookalike/server"
)

// Config tunes the HTTP front end.
type Config struct {
	// CORSOrigins lists the origins (scheme://host[:port]) whose pages may call the API
	// from a browser; "*" allows every origin. Empty: none, only the pages served here.
	CORSOrigins []string
}

// Validate reports a configuration New would refuse: a CORS origin that is not "*" or
// scheme://host[:port].
func (c Config) Validate() error { return checkOrigins(c.CORSOrigins) }

// reviewerHeader is forwarded to the service as its "x-lookalike-reviewer" metadata (who
// records a duplicate decision, when the request does not say).
const reviewerHeader = "X-Lookalike-Reviewer"

// formSlack is what a request may carry beside its photo: JSON framing, form fields.
const formSlack = 64 << 10

// frontEnd is the HTTP front end of one server.
type frontEnd struct {
	gw     server.Gateway
	gwmux  *runtime.ServeMux // grpc-gateway: the JSON transcoding of every route
	routes []route
	pages  *pages
	// jsonLimit bounds a JSON request body (a photo base64-encoded plus framing), and
	// uploadLimit a multipart or raw photo upload.
	jsonLimit, uploadLimit int64
}

// route is one HTTP route of the API: an RPC and where the HTTP rules put it.
type route struct {
	method     string // HTTP method
	path       string // path template, e.g. /v1/products/{id}
	rpc        protoreflect.MethodDescriptor
	fullMethod string // gRPC method, e.g. /lookalike.v1.Lookalike/Get
}

// pathParams are the names of the route's path variables.
func (r route) pathParams() []string {
	var names []string
	for rest := r.path; ; {
		i := strings.IndexByte(rest, '{')
		j := strings.IndexByte(rest, '}')
		if i < 0 || j < i {
			return names
		}
		names = append(names, rest[i+1:j])
		rest = rest[j+1:]
	}
}

// hasBody tells whether the route's request comes in the body (the rules bind body "*" to
// every POST and PUT).
func (r route) hasBody() bool { return r.method == http.MethodPost || r.method == http.MethodPut }

// acceptsUpload tells whether the route also takes a photo as multipart/form-data or raw
// bytes: its request has a top-level bytes field named image.
func (r route) acceptsUpload() bool {
	f := r.rpc.Input().Fields().ByName("image")
	return r.hasBody() && f != nil && f.Kind() == protoreflect.BytesKind && !f.IsList()
}

// New returns the HTTP front end over gw: the JSON API under /v1/ (one route per RPC, as the
// HTTP rules say), its OpenAPI description at /v1/openapi.json, /healthz, and the pages.
func New(gw server.Gateway, cfg Config) (http.Handler, error) {
	if gw.Conn == nil {
		return nil, fmt.Errorf("web: Gateway.Conn is nil")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if gw.Authorize == nil {
		gw.Authorize = func(string, http.Header) error { return nil }
	}
	if gw.Reserve == nil {
		gw.Reserve = func(string, int64) (func(), error) { return func() {}, nil }
	}
	routes, err := apiRoutes()
	if err != nil {
		return nil, err
	}
	if gw.MaxMessageBytes <= 0 {
		gw.MaxMessageBytes = server.DefaultMaxMessageBytes
	}
	maxMsg := int64(gw.MaxMessageBytes)
	f := &frontEnd{
		gw: gw, routes: routes,
		jsonLimit: (maxMsg+2)/3*4 + formSlack, uploadLimit: maxMsg + formSlack,
	}
	f.gwmux = runtime.NewServeMux(
		// The proto's field names, every field present, and no unknown fields accepted: a
		// misspelt field is an error, not silently ignored.
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}}),
		runtime.WithIncomingHeaderMatcher(headerMatcher),
		runtime.WithErrorHandler(errorHandler),
		// Ids may hold any character, '/' included (sent as %2F): the gateway matches a
		// route on the path split at '/' only, and the values come from the router in front
		// (pathFromRouter), which unescapes each segment exactly once.
		runtime.WithUnescapingMode(runtime.UnescapingModeAllExceptSlash),
		runtime.WithMiddlewares(pathFromRouter),
		runtime.WithHealthzEndpoint(healthpb.NewHealthClient(gw.Conn)),
	)
	if err := pb.RegisterLookalikeHandlerClient(context.Background(), f.gwmux, pb.NewLookalikeClient(gw.Conn)); err != nil {
		return nil, fmt.Errorf("web: register the gateway: %w", err)
	}
	if f.pages, err = newPages(gw); err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	for _, rt := range routes {
		mux.Handle(rt.method+" "+rt.path, f.apiHandler(rt))
	}
	mux.Handle("GET /v1/openapi.json", f.openAPI())
	// Anything else under /v1/: 405 with the methods the path takes, or the gateway's 404.
	mux.Handle("/v1/", f.unrouted(routes))
	mux.Handle("GET /healthz", f.gwmux)
	f.pages.register(mux)
	return withCORS(cfg.CORSOrigins, withHeaders(withChallenge(mux))), nil
}

// apiHandler serves one route: the photo routes and uploads here, everything else through
// the gateway, with the request body bounded and counted first.
func (f *frontEnd) apiHandler(rt route) http.Handler {
	clientStream := rt.rpc.IsStreamingClient()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case rt.rpc.Name() == "GetPhoto" && !wantsJSON(r):
			f.servePhoto(w, r, rt)
		case rt.acceptsUpload() && isUpload(r):
			f.serveUpload(w, r, rt)
		case clientStream:
			f.serveStream(w, r, rt)
		case rt.hasBody():
			f.serveJSON(w, r, rt)
		case r.Method == http.MethodHead:
			// The gateway knows GET only; the server drops the body of a HEAD answer.
			get := r.Clone(r.Context())
			get.Method = http.MethodGet
			f.gwmux.ServeHTTP(w, get)
		default:
			f.gwmux.ServeHTTP(w, r)
		}
	})
}

// unrouted answers a request no route took: 405 and Allow when its path has routes for other
// methods, else 404, both with the gateway's error body.
func (f *frontEnd) unrouted(routes []route) http.Handler {
	byPath := http.NewServeMux()
	allow := map[string][]string{}
	for _, rt := range routes {
		allow[rt.path] = append(allow[rt.path], rt.method)
	}
	for path, methods := range allow {
		if slices.Contains(methods, http.MethodGet) {
			methods = append(methods, http.MethodHead)
		}
		slices.Sort(methods)
		byPath.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", strings.Join(methods, ", "))
			f.writeError(w, r, httpStatus(http.StatusMethodNotAllowed, codes.Unimplemented, "%s %s: the path takes %s", r.Method, r.URL.Path, strings.Join(methods, ", ")))
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := byPath.Handler(r); pattern != "" {
			byPath.ServeHTTP(w, r)
			return
		}
		f.writeError(w, r, status.Errorf(codes.NotFound, "no API route %s %s (see /v1/openapi.json)", r.Method, r.URL.Path))
	})
}

// apiRoutes reads the routes from the generated OpenAPI description, which lists every HTTP
// rule: adding a rule (and `make proto`) adds its route here.
func apiRoutes() ([]route, error) {
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(pb.OpenAPI(), &doc); err != nil {
		return nil, fmt.Errorf("web: read the OpenAPI description: %w", err)
	}
	svc := pb.File_lookalike_v1_lookalike_proto.Services().ByName("Lookalike")
	var routes []route
	for path, ops := range doc.Paths {
		for method, op := range ops {
			name, ok := strings.CutPrefix(op.OperationID, "Lookalike_")
			md := svc.Methods().ByName(protoreflect.Name(name))
			if !ok || md == nil {
				return nil, fmt.Errorf("web: the OpenAPI operation %q names no Lookalike RPC", op.OperationID)
			}
			routes = append(routes, route{
				method: strings.ToUpper(method), path: path, rpc: md,
				fullMethod: "/" + string(svc.FullName()) + "/" + name,
			})
		}
	}
	slices.SortFunc(routes, func(a, b route) int { return strings.Compare(a.path+" "+a.method, b.path+" "+b.method) })
	return routes, nil
}

// pathFromRouter gives the gateway's handlers the path values of the router in front, which
// matched the same template: each segment unescaped once, %2F included (the gateway would
// leave %2F escaped in a value, or split at it).
func pathFromRouter(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		for name := range params {
			if v := r.PathValue(name); v != "" {
				params[name] = v
			}
		}
		next(w, r, params)
	}
}

// headerMatcher forwards the reviewer header beside grpc-gateway's defaults (Authorization
// always goes through as "authorization").
func headerMatcher(key string) (string, bool) {
	if textproto.CanonicalMIMEHeaderKey(key) == reviewerHeader {
		return strings.ToLower(reviewerHeader), true
	}
	return runtime.DefaultHeaderMatcher(key)
}

// errorHandler is grpc-gateway's standard mapping (gRPC code -> HTTP status, body
// {"code", "message", "details"}), with a proper challenge on 401.
// (withChallenge adds the proper challenge to its 401s.)
func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// withChallenge makes every 401 carry a bearer challenge (grpc-gateway puts the status
// message in WWW-Authenticate, and nothing in a stream's).
func withChallenge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(challengeWriter{w}, r)
	})
}

// challengeWriter sets WWW-Authenticate on a 401.
type challengeWriter struct{ http.ResponseWriter }

func (c challengeWriter) WriteHeader(code int) {
	if code == http.StatusUnauthorized {
		c.Header().Set("WWW-Authenticate", `Bearer realm="lookalike"`)
	}
	c.ResponseWriter.WriteHeader(code)
}

// Flush lets streamed answers through.
func (c challengeWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the connection's writer.
func (c challengeWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// writeError answers with err the way the gateway answers a failed call.
func (f *frontEnd) writeError(w http.ResponseWriter, r *http.Request, err error) {
	_, out := runtime.MarshalerForRequest(f.gwmux, r)
	runtime.HTTPError(r.Context(), f.gwmux, out, w, r, err)
}

// httpStatus is err with an HTTP status other than its code's usual one.
func httpStatus(code int, c codes.Code, format string, args ...any) error {
	return &runtime.HTTPStatusError{HTTPStatus: code, Err: status.Errorf(c, format, args...)}
}

// wantsJSON tells whether a request asks for JSON rather than a picture.
func wantsJSON(r *http.Request) bool {
	accept := r.Header.Get("Accept")
	return strings.Contains(accept, "application/json") && !strings.Contains(accept, "image/")
}

// openAPI serves the OpenAPI description.
func (f *frontEnd) openAPI() http.Handler {
	doc := pb.OpenAPI()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	})
}

// checkOrigins refuses a CORS origin that is not "*" or scheme://host[:port].
func checkOrigins(origins []string) error {
	for _, o := range origins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return fmt.Errorf("web: CORS origin %q must be scheme://host[:port] (e.g. https://shop.example.com) or *", o)
		}
	}
	return nil
}

// withCORS lets pages of the allowed origins call the API: it answers preflight requests and
// marks responses readable by them. Without origins it adds nothing.
func withCORS(origins []string, next http.Handler) http.Handler {
	if len(origins) == 0 {
		return next
	}
	allowed := make(map[string]bool, len(origins))
	for _, o := range origins {
		allowed[strings.TrimSuffix(o, "/")] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		if origin == "" || !(allowed["*"] || allowed[origin]) {
			next.ServeHTTP(w, r)
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Expose-Headers", "ETag, Content-Length")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Add("Vary", "Access-Control-Request-Method, Access-Control-Request-Headers")
			h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-None-Match, "+reviewerHeader)
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// withHeaders adds the headers every response carries.
func withHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"lookalike/catalog"
	"lookalike/internal/dataset"
	pb "lookalike/proto/lookalike/v1"
	"lookalike/store"
)

// selfSignedCert writes a certificate and key for 127.0.0.1 and returns their paths and a
// pool that trusts the certificate.
func selfSignedCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lookalike test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestServerAuthTLSLimitsHealthMetrics runs a server with TLS, a bearer token and room for
// one call at a time.
func TestServerAuthTLSLimitsHealthMetrics(t *testing.T) {
	certFile, keyFile, pool := selfSignedCert(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{
		DataDir: t.TempDir(), TLSCertFile: certFile, TLSKeyFile: keyFile,
		AuthTokenFile: tokenFile, MaxConcurrent: 1,
	}, grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(pool, "")))
	defer s.shutdown()
	ctx := context.Background()
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret-token")
	wrong := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer guess")

	// Health answered without a token (startServer already waited on it), the API not.
	if _, err := s.client.Stats(ctx, &pb.StatsRequest{}); codeOfErr(err) != codes.Unauthenticated {
		t.Fatalf("Stats without token: %v, want UNAUTHENTICATED", err)
	}
	if _, err := s.client.Stats(wrong, &pb.StatsRequest{}); codeOfErr(err) != codes.Unauthenticated {
		t.Fatalf("Stats with a wrong token: %v, want UNAUTHENTICATED", err)
	}
	if _, err := s.client.Stats(authed, &pb.StatsRequest{}); err != nil {
		t.Fatalf("Stats with token: %v", err)
	}

	// Reflection lists the service, so grpcurl needs no .proto.
	rs, err := reflectionpb.NewServerReflectionClient(s.conn).ServerReflectionInfo(authed)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var services []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		services = append(services, svc.GetName())
	}
	if !strings.Contains(strings.Join(services, ","), ServiceName) {
		t.Fatalf("reflection lists %v, want %s", services, ServiceName)
	}
	_ = rs.CloseSend()
	// The reflection stream may hold the one slot until the server sees it end.
	waitFor(t, func() bool { _, err := s.client.Stats(authed, &pb.StatsRequest{}); return err == nil })

	// A call whose request is still arriving holds the only slot (the tap took it before
	// reading a byte): other calls are shed, health is not.
	tc, err := tls.Dial("tcp", s.addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	arriving := rawOver(t, tc)
	if err := arriving.start("/lookalike.v1.Lookalike/SearchByImage", "authorization", "Bearer s3cret-token"); err != nil {
		t.Fatal(err)
	}
	arriving.send(1<<20, 1<<10, make([]byte, 1<<10)) // 1 KiB of a 1 MiB request, then silence
	// Probe only once the server has admitted the call and reads it (it opens the stream's
	// window to the declared size): the call arrives on a connection of its own, so a probe
	// sent earlier could reach the tap first, take the slot and get the call refused.
	var admitted bool
	arriving.await(func() bool { admitted = arriving.askedMore; return admitted || arriving.ended })
	if !admitted {
		code, msg, _, _, _ := arriving.state()
		t.Fatalf("the arriving call was refused: %v %s", code, msg)
	}
	waitFor(t, func() bool {
		_, err := s.client.Stats(authed, &pb.StatsRequest{})
		return codeOfErr(err) == codes.ResourceExhausted
	})
	if h, err := s.health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health while the slot is taken: %v %v", h, err)
	}
	_ = tc.Close()
	waitFor(t, func() bool { _, err := s.client.Stats(authed, &pb.StatsRequest{}); return err == nil })

	// An ingest stream holds the slot only while it has an item in hand: once its item is
	// answered, other calls get the slot though the stream stays open.
	stream, err := s.client.UpsertStream(authed)
	if err != nil {
		t.Fatal(err)
	}
	vec := make([]float32, testEmbedder(t).Dim())
	vec[5] = 1
	if err := stream.Send(&pb.UpsertRequest{Id: "held", Content: &pb.UpsertRequest_Vector{Vector: &pb.Vector{Values: vec}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || r.GetOutcome() != pb.Outcome_OUTCOME_CREATED {
		t.Fatalf("stream item: %v %v", r, err)
	}
	waitFor(t, func() bool { _, err := s.client.Stats(authed, &pb.StatsRequest{}); return err == nil })
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("stream end: %v", err)
	}

	// The metrics listener reports what happened.
	hresp, err := http.Get("http://" + s.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(hresp.Body)
	hresp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		// At least one: waitFor may itself be shed while a stream winds down.
		`lookalike_grpc_requests_total{code="ResourceExhausted",method="Stats"} `,
		`lookalike_grpc_requests_total{code="Unauthenticated",method="Stats"} 2`,
		`lookalike_grpc_shed_total{method="Stats"} `,
		`lookalike_upsert_items_total{outcome="created"} 1`,
		`lookalike_index_items 1`,
		`lookalike_grpc_request_duration_seconds_bucket{code="OK",method="UpsertStream"`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// waitFor polls cond until it holds. The two minutes are a safety net for a condition that
// never comes, not a bound on how fast the server must be.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within two minutes")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServerNotServingUntilLoaded holds the store file locked so the catalogue cannot open:
// meanwhile health says NOT_SERVING and calls get UNAVAILABLE, and the start fails cleanly.
func TestServerNotServingUntilLoaded(t *testing.T) {
	dir := t.TempDir()
	e := testEmbedder(t)
	held, err := store.Open(filepath.Join(dir, catalog.StoreFileName), store.Options{ModelIdentity: e.Identity(), Dim: e.Dim()})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	s, err := launch(t, Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h, err := s.health.Check(ctx, &healthpb.HealthCheckRequest{Service: ServiceName})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health while loading: %v %v, want NOT_SERVING", h, err)
	}
	if _, err := s.client.Stats(ctx, &pb.StatsRequest{}); codeOfErr(err) != codes.Unavailable {
		t.Fatalf("Stats while loading: %v, want UNAVAILABLE", err)
	}
	select {
	case err := <-s.done:
		if !errors.Is(err, store.ErrInUse) {
			t.Fatalf("Serve returned %v, want an error wrapping store.ErrInUse", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not give up on a locked store")
	}
	_ = s.conn.Close()
}

func TestRecoveryInterceptorTurnsPanicsIntoInternal(t *testing.T) {
	r := recoverer{log: discardLogger()}
	_, err := r.unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x/Y"},
		func(context.Context, any) (any, error) { panic("boom") })
	if codeOfErr(err) != codes.Internal {
		t.Fatalf("unary panic: %v, want INTERNAL", err)
	}
	err = r.stream(nil, nil, &grpc.StreamServerInfo{FullMethod: "/x/Z"},
		func(any, grpc.ServerStream) error { panic(fmt.Errorf("boom")) })
	if codeOfErr(err) != codes.Internal {
		t.Fatalf("stream panic: %v, want INTERNAL", err)
	}
}

// TestConfigDefaultsTwiceChangeNothing: Run applies the defaults and Serve applies them
// again, so a second pass must keep what the first made (a negative SnapshotInterval, "no
// periodic saves", once came back from it as the default).
func TestConfigDefaultsTwiceChangeNothing(t *testing.T) {
	for _, cfg := range []Config{{}, {SnapshotInterval: -1}, {SnapshotInterval: time.Second, MaxConcurrent: 3}, {MaxMessageBytes: 64 << 20, MaxBufferedBytes: 1}} {
		once := cfg.withDefaults()
		if twice := once.withDefaults(); !reflect.DeepEqual(twice, once) {
			t.Errorf("withDefaults twice:\n%+v\nonce:\n%+v", twice, once)
		}
	}
	if got := (Config{MaxMessageBytes: 64 << 20, MaxBufferedBytes: 1}).withDefaults().MaxBufferedBytes; got != 64<<20 {
		t.Errorf("a buffer budget below the largest message became %d, want the message size", got)
	}
	if got := (Config{SnapshotInterval: -1}).withDefaults().withDefaults().SnapshotInterval; got >= 0 {
		t.Errorf("negative SnapshotInterval became %v", got)
	}
}

// TestServerConcurrentClientsMixIngestAndSearch has many clients upserting (photos and
// vectors), searching and reading at once; run it under -race.
func TestServerConcurrentClientsMixIngestAndSearch(t *testing.T) {
	// The photo list only: under -race, ingesting the whole shared catalogue would be slow.
	all, err := dataset.LoadPhotos(dataset.PhotosGrocery)
	if err != nil {
		t.Fatal(err)
	}
	var photos []dataset.Photo
	for i := 0; i < len(all); i += 45 {
		photos = append(photos, all[i])
	}
	images := make([][]byte, len(photos))
	for i, p := range photos {
		b, err := os.ReadFile(p.Path)
		if err != nil {
			t.Fatal(err)
		}
		images[i] = b
	}
	s := startServer(t, Config{DataDir: t.TempDir()})
	defer s.shutdown()
	ctx := context.Background()
	dim := testEmbedder(t).Dim()
	const clients, rounds = 6, 6
	var wg sync.WaitGroup
	errs := make(chan error, clients*rounds*4)
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				img := images[(w*rounds+r)%len(images)]
				id := fmt.Sprintf("c%d-r%d", w, r)
				var err error
				switch r % 3 {
				case 0:
					_, err = s.client.Upsert(ctx, &pb.UpsertRequest{Id: id, Content: &pb.UpsertRequest_Image{Image: img}, Category: fmt.Sprint(w % 2)})
				case 1:
					vec := make([]float32, dim)
					vec[(w*rounds+r)%dim] = 1
					_, err = ingest(ctx, s.client, oneRequest(&pb.UpsertRequest{Id: id, Content: &pb.UpsertRequest_Vector{Vector: &pb.Vector{Values: vec}}, Category: fmt.Sprint(w % 2)}))
				case 2:
					_, err = ingest(ctx, s.client, oneRequest(&pb.UpsertRequest{Id: id, Content: &pb.UpsertRequest_Image{Image: img}}))
				}
				if err != nil {
					errs <- fmt.Errorf("%s upsert: %w", id, err)
					continue
				}
				if _, err := s.client.SearchByImage(ctx, &pb.SearchByImageRequest{Image: img, K: 5, Filter: &pb.Filter{Categories: []string{"1"}}}); err != nil {
					errs <- fmt.Errorf("%s search by image: %w", id, err)
				}
				if _, err := s.client.SearchById(ctx, &pb.SearchByIdRequest{Id: id, K: 3}); err != nil {
					errs <- fmt.Errorf("%s search by id: %w", id, err)
				}
				if _, err := s.client.Get(ctx, &pb.GetRequest{Id: id, IncludeVector: true}); err != nil {
					errs <- fmt.Errorf("%s get: %w", id, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st, err := s.client.Stats(ctx, &pb.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetCount() != clients*rounds || st.GetIndex().GetSize() != clients*rounds {
		t.Fatalf("stats after concurrent ingest: count %d, index %d, want %d", st.GetCount(), st.GetIndex().GetSize(), clients*rounds)
	}
}

func oneRequest(r *pb.UpsertRequest) func() (*pb.UpsertRequest, error) {
	sent := false
	return func() (*pb.UpsertRequest, error) {
		if sent {
			return nil, io.EOF
		}
		sent = true
		return r, nil
	}
}

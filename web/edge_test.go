package web_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "lookalike/proto/lookalike/v1"
	"lookalike/server"
)

// rawRequest sends head (a request line and headers, without the blank line) and then body
// on a fresh connection, and reads the response. The server may answer before the body has
// been sent: then what the body would have been is never needed.
func rawRequest(t *testing.T, addr, head string, body []byte) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// A safety net only: a server that waits for the body the test never sends would
	// otherwise hang the test.
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, head+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func hostOf(f *fixture) string {
	return strings.TrimPrefix(strings.TrimPrefix(f.base, "http://"), "https://")
}

// TestBearerToken: the HTTP API asks for the same token as gRPC, compared by the service;
// health and the pages stay open, and an upload without the token is refused unread.
func TestBearerToken(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := startTemp(t, serverOptions{cfg: server.Config{AuthTokenFile: tokenFile}})
	cat := loadCatalogue(t)
	photo := cat.iconic["Oatly-Oat-Milk"]
	buf, ct := form(t, photo, "photo_id", "main")
	put := f.request(t, "PUT", "/v1/products/p1", buf, "Content-Type", ct, "Authorization", "Bearer s3cret")
	if resp, body := f.do(t, put); resp.StatusCode != 200 {
		t.Fatalf("upsert with the token: %d %s", resp.StatusCode, body)
	}

	for _, c := range []struct {
		name, method, path, auth string
		status                   int
	}{
		{"no token", "GET", "/v1/stats", "", 401},
		{"wrong token", "GET", "/v1/stats", "Bearer nope", 401},
		{"another scheme", "GET", "/v1/stats", "Basic s3cret", 401},
		{"the token", "GET", "/v1/stats", "Bearer s3cret", 200},
		{"the token, lower-case scheme", "GET", "/v1/stats", "bearer s3cret", 200},
		{"a photo without it", "GET", "/v1/products/p1/photos/main", "", 401},
		{"a photo with it", "GET", "/v1/products/p1/photos/main", "Bearer s3cret", 200},
		{"a stream without it", "GET", "/v1/duplicates", "", 401},
		{"health, open to all", "GET", "/healthz", "", 200},
		{"the pages, open to all", "GET", "/duplicates", "", 200},
	} {
		req := f.request(t, c.method, c.path, nil)
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, body := f.do(t, req)
		if resp.StatusCode != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, resp.StatusCode, body, c.status)
			continue
		}
		if c.status == 401 {
			if e := errorOf(t, body); e.Code != 16 || resp.Header.Get("WWW-Authenticate") != `Bearer realm="lookalike"` {
				t.Errorf("%s: code %d, WWW-Authenticate %q", c.name, e.Code, resp.Header.Get("WWW-Authenticate"))
			}
		}
		if c.name == "a photo with it" && !strings.HasPrefix(resp.Header.Get("Cache-Control"), "private") {
			t.Errorf("a photo behind a token is cacheable by shared caches: %q", resp.Header.Get("Cache-Control"))
		}
	}

	// An upload and a stream that announce megabytes and send none of them: refused at
	// once, which they could not be if the server waited to read them.
	for _, path := range []string{"/v1/search/image?k=3", "/v1/products"} {
		resp := rawRequest(t, hostOf(f), "POST "+path+" HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 10000000", nil)
		if resp.StatusCode != 401 {
			t.Errorf("POST %s without the token: %d, want 401 before the body", path, resp.StatusCode)
		}
	}

	// The refusals are counted like the service's own.
	req := f.request(t, "GET", "/v1/stats", nil, "Authorization", "Bearer s3cret")
	resp, body := f.do(t, req)
	var st pb.StatsResponse
	decode(t, resp, body, 200, &st)
	unauthenticated := 0
	for _, e := range st.GetRecentErrors() {
		if e.GetCode() == "UNAUTHENTICATED" {
			unauthenticated++
		}
	}
	if unauthenticated < 6 {
		t.Errorf("%d UNAUTHENTICATED among the recent errors, want the 6 refusals at least: %v", unauthenticated, st.GetRecentErrors())
	}
}

// TestRequestBudget: a request body in flight over HTTP holds its bytes in the server's one
// request budget, so while it arrives further calls are shed with RESOURCE_EXHAUSTED (429),
// gRPC-bound or not; a body over the message limit is refused with 413 before it is read.
func TestRequestBudget(t *testing.T) {
	f := startTemp(t, serverOptions{cfg: server.Config{MaxMessageBytes: 1 << 20, MaxBufferedBytes: 1 << 20}})
	host := hostOf(f)

	resp := rawRequest(t, host, "POST /v1/search/image?k=3 HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000000", nil)
	if resp.StatusCode != 413 {
		t.Errorf("a 5 MB upload to a 1 MiB server: %d, want 413", resp.StatusCode)
	}

	status := func() int {
		resp, _ := f.do(t, f.request(t, "GET", "/v1/stats", nil))
		return resp.StatusCode
	}
	// Hold an upload: its headers and part of its body, the rest never sent. The held body's
	// bytes are reserved once its headers have been handled: from then on the service's own
	// reservation for a call does not fit. The upload comes on a connection of its own, so a
	// probe can reach the budget first and get the upload refused (it is then answered): hold
	// another until one holds the budget.
	for {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /v1/search/image?k=3 HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 800000\r\n\r\n%s", strings.Repeat("x", 1000))
		answered := make(chan struct{})
		go func() {
			_, _ = conn.Read(make([]byte, 1)) // a held upload is never answered
			close(answered)
		}()
		shed := false
		waitFor(t, "calls shed while an upload holds the budget", func() bool {
			select {
			case <-answered:
				return true
			default:
			}
			shed = status() == 429
			return shed
		})
		conn.Close()
		if shed {
			break
		}
	}
	waitFor(t, "calls served once the upload is gone", func() bool { return status() == 200 })
}

// waitFor polls cond until it holds (failing after a minute: a safety net, not a proof).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after a minute", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTLS: with a certificate the HTTP front end speaks TLS too, and its calls reach the
// service over the pinned in-memory connection.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	f := startTemp(t, serverOptions{
		cfg:       server.Config{TLSCertFile: certFile, TLSKeyFile: keyFile},
		clientTLS: &tls.Config{RootCAs: pool},
	})
	resp, body := f.do(t, f.request(t, "GET", "/v1/stats", nil))
	var st pb.StatsResponse
	decode(t, resp, body, 200, &st)
	if resp.TLS == nil {
		t.Error("the answer did not come over TLS")
	}
	plain := &http.Client{}
	r, err := plain.Get("http://" + hostOf(f) + "/v1/stats")
	if err == nil {
		if r.StatusCode == 200 {
			t.Error("plain HTTP was served by a TLS server")
		}
		r.Body.Close()
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns a pool trusting it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lookalike test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

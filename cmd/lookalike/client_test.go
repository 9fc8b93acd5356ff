package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lookalike/server"
)

// TestClientTokenAndTLS drives a real TLS server that demands a bearer token through the
// shared client flags (--token, --tls-ca) and their environment variables.
func TestClientTokenAndTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeSelfSignedCert(t, dir)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- server.Serve(ctx, server.Config{
			DataDir: filepath.Join(dir, "data"), EmbedThreads: 1, SnapshotInterval: -1,
			AuthTokenFile: tokenFile, TLSCertFile: certFile, TLSKeyFile: keyFile,
		}, lis, nil, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	addr := lis.Addr().String()
	base := []string{"--server", addr, "--timeout", "10s"}
	// Health is open to everyone, so it tells when the server is up.
	if code, _, stderr := runCLI(t, nil, append([]string{"health", "--wait", "60s", "--tls-ca", certFile}, base...)...); code != exitOK {
		t.Fatalf("health: %s", stderr)
	}
	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"token and CA", nil, []string{"--tls-ca", certFile, "--token", "s3cret-token"}, exitOK, ""},
		{"from the environment", map[string]string{"LOOKALIKE_TLS_CA": certFile, "LOOKALIKE_TOKEN": "s3cret-token"}, nil, exitOK, ""},
		{"no token", nil, []string{"--tls-ca", certFile}, exitFailure, "refused the credentials"},
		{"wrong token", nil, []string{"--tls-ca", certFile, "--token", "guess"}, exitFailure, "refused the credentials"},
		{"plaintext to a TLS server", nil, []string{"--token", "s3cret-token"}, exitFailure, "unavailable"},
		{"CA file that is not PEM", nil, []string{"--tls-ca", tokenFile}, exitFailure, "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{"stats", "--json"}, base...), tt.args...)
			code, stdout, stderr := runCLI(t, tt.env, args...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantStderr) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", code, tt.wantCode, stderr, tt.wantStderr)
			}
			if code == exitOK {
				var s statsJSON
				mustJSON(t, stdout, &s)
				if s.Dim != 1280 {
					t.Errorf("stats: %+v", s)
				}
			}
		})
	}
}

// writeSelfSignedCert writes a certificate for 127.0.0.1 that is its own CA.
func writeSelfSignedCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "lookalike test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
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
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

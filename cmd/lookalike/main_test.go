package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// runCLI runs one command line in-process and returns its exit code and streams.
func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr, getenv)
	return code, stdout.String(), stderr.String()
}

func TestDispatch(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"no arguments", nil, exitUsage, "", "Usage: lookalike <command>"},
		{"help", []string{"help"}, exitOK, "Commands:", ""},
		{"--help", []string{"--help"}, exitOK, "ingest", ""},
		{"unknown command", []string{"frobnicate"}, exitUsage, "", `unknown command "frobnicate"`},
		{"unknown flag", []string{"search", "--nope", "x.jpg"}, exitUsage, "", "lookalike search: flag provided but not defined: -nope"},
		{"missing argument", []string{"similar"}, exitUsage, "", "want exactly one ID"},
		{"k out of range", []string{"search", "--k", "0", "x.jpg"}, exitUsage, "", "--k must be in 1..1000"},
		{"a boost without its add", []string{"search", "--boost", "kind=pack", "x.jpg"}, exitUsage, "", `--boost "kind=pack": want ATTR=VALUE:ADD`},
		{"a boost above 1", []string{"similar", "--boost", "kind=pack:1.5", "x"}, exitUsage, "", "ADD in -1..1"},
		{"flags after arguments", []string{"get", "some-id", "--server", ""}, exitUsage, "", "--server is empty"},
		{"bad threshold", []string{"dedup", "--threshold", "3"}, exitUsage, "", "--threshold must be"},
		{"delete needs ids", []string{"delete"}, exitUsage, "", "want at least one ID"},
		{"unreadable image", []string{"search", "/nonexistent/photo.jpg"}, exitFailure, "", "lookalike search: read image: open /nonexistent/photo.jpg"},
		{"manifest needs dataset", []string{"manifest", "out.csv"}, exitUsage, "", "--dataset must be grocery, clothing or abo"},
		{"CORS without HTTP", []string{"serve", "--data", "d", "--http-cors-origin", "https://shop.example.com"}, exitUsage, "", "--http-cors-origin needs --http"},
		{"a malformed CORS origin", []string{"serve", "--data", "d", "--http", "127.0.0.1:0", "--http-cors-origin", "shop.example.com"}, exitUsage, "", "must be scheme://host[:port]"},
		{"an unknown backend", []string{"serve", "--data", "d", "--backend", "mongo"}, exitUsage, "", "--backend is embedded or weaviate"},
		{"weaviate without its URL", []string{"serve", "--backend", "weaviate"}, exitUsage, "", "--backend weaviate needs --weaviate-url"},
		{"weaviate with a data directory", []string{"serve", "--backend", "weaviate", "--weaviate-url", "http://127.0.0.1:1", "--data", "d"}, exitUsage, "", "keeps everything in the cluster"},
		{"a weaviate URL for the embedded backend", []string{"serve", "--data", "d", "--weaviate-url", "http://127.0.0.1:1"}, exitUsage, "", "--weaviate-url needs --backend weaviate"},
		{"a bad quantisation", []string{"serve", "--data", "d", "--quantize", "int4"}, exitUsage, "", "unknown quantisation"},
		{"HTTP address file without HTTP", []string{"serve", "--data", "d", "--http-addr-file", "f"}, exitUsage, "", "--http-addr-file needs --http"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, nil, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.wantCode, stderr)
			}
			if !strings.Contains(stdout, tt.wantStdout) {
				t.Errorf("stdout %q does not contain %q", stdout, tt.wantStdout)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr, tt.wantStderr)
			}
			if tt.wantCode != exitOK && strings.Count(strings.TrimSpace(stderr), "\n") > 0 && tt.args != nil {
				t.Errorf("error report is not one line: %q", stderr)
			}
		})
	}
}

// Every command answers --help on stdout with exit 0, which is how people discover flags.
func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, nil, c.name, "--help")
			if code != exitOK {
				t.Fatalf("exit code %d, stderr %q", code, stderr)
			}
			if !strings.HasPrefix(stdout, "Usage: lookalike "+c.name) {
				t.Errorf("help does not start with the synopsis: %q", stdout)
			}
			if strings.Count(stdout, "Usage:") != 1 {
				t.Errorf("usage printed %d times", strings.Count(stdout, "Usage:"))
			}
		})
	}
}

func TestClientFlagsFromEnvironment(t *testing.T) {
	env := map[string]string{"LOOKALIKE_SERVER": "example.invalid:1", "LOOKALIKE_TOKEN": "s3cret", "LOOKALIKE_TIMEOUT": "7s"}
	a := &app{getenv: func(k string) string { return env[k] }}
	fs := newFlagSet(a, "x", "", "")
	var cf clientFlags
	cf.register(fs, a)
	if err := parseFlags(fs, []string{"--timeout", "3s"}); err != nil {
		t.Fatal(err)
	}
	if cf.server != "example.invalid:1" || cf.token != "s3cret" || cf.timeout.String() != "3s" {
		t.Errorf("got server %q token %q timeout %v", cf.server, cf.token, cf.timeout)
	}
}

func TestParseFlagsInterleaved(t *testing.T) {
	tests := []struct {
		args     []string
		wantJSON bool
		wantPos  []string
	}{
		{[]string{"a", "--json", "b"}, true, []string{"a", "b"}},
		{[]string{"--json", "a"}, true, []string{"a"}},
		{[]string{"a", "--", "--json"}, false, []string{"a", "--json"}},
		{nil, false, nil},
	}
	for _, tt := range tests {
		a := &app{getenv: func(string) string { return "" }}
		fs := newFlagSet(a, "x", "", "")
		asJSON := fs.Bool("json", false, "")
		if err := parseFlags(fs, tt.args); err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if *asJSON != tt.wantJSON || strings.Join(fs.Args(), "|") != strings.Join(tt.wantPos, "|") {
			t.Errorf("%v: json=%v args=%v, want %v %v", tt.args, *asJSON, fs.Args(), tt.wantJSON, tt.wantPos)
		}
	}
}

package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"lookalike/catalog"
	lookalikev1 "lookalike/proto/lookalike/v1"
	"lookalike/store"
)

// backupJSON is `lookalike backup --json`.
type backupJSON struct {
	Data   string `json:"data"`
	Server string `json:"server,omitempty"`
	Out    string `json:"out"`
	Bytes  int64  `json:"bytes"`
	Items  int    `json:"items"`
	Seq    uint64 `json:"seq"`
	SHA256 string `json:"sha256,omitempty"`
}

func runBackup(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "backup", "--out FILE [--server ADDR | --data DIR]",
		"Write a consistent, verified copy of the product store (products and vectors) to FILE.\n"+
			"From a running server (--server, the default): the server streams a copy of its store as it\n"+
			"was when the backup began while it keeps serving; the copy is written beside FILE, its size\n"+
			"and SHA-256 checked against the server's, opened and checked, fsynced and renamed over FILE.\n"+
			"From a stopped server's data directory (--data, or LOOKALIKE_DATA without --server): copied\n"+
			"directly; a running server holds the file locked.\n"+
			"The graph snapshot is derived data and is rebuilt from the store, so it is not copied.\n"+
			"With --server, --timeout bounds the wait for each piece of the copy, not the whole copy.")
	var cf clientFlags
	cf.register(fs, a)
	data := fs.String("data", a.getenv("LOOKALIKE_DATA"), "data directory of a stopped 'lookalike serve' (env LOOKALIKE_DATA)")
	out := fs.String("out", "", "backup file to write (replaced atomically)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("takes no arguments")
	}
	if *out == "" {
		return usagef("--out is required")
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	if explicit["server"] && explicit["data"] {
		return usagef("--server (back up a running server) and --data (a stopped one) exclude each other")
	}
	var res backupJSON
	var err error
	if *data != "" && !explicit["server"] {
		res, err = backupOffline(a, *data, *out)
	} else {
		res, err = backupOnline(ctx, a, &cf, *out)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(a.stdout, res)
	}
	from := res.Data
	if res.Server != "" {
		from = "server " + res.Server
	}
	fmt.Fprintf(a.stdout, "backed up %d products (seq %d, %d bytes) from %s to %s\n", res.Items, res.Seq, res.Bytes, from, res.Out)
	return ctx.Err()
}

// backupOffline copies a stopped server's store into a temporary file beside out, verifies the
// copy like one from a server (it opens as a store and passes the full check) and only then
// renames it over out: a damaged source must never replace a good backup.
func backupOffline(a *app, data, out string) (backupJSON, error) {
	path := filepath.Join(data, catalog.StoreFileName)
	if _, err := os.Stat(path); err != nil {
		return backupJSON{}, fmt.Errorf("no store in %s: %w", data, err)
	}
	s, err := store.Open(path, store.Options{ReadOnly: true, LockTimeout: time.Second, Logger: a.logger})
	if errors.Is(err, store.ErrInUse) {
		return backupJSON{}, fmt.Errorf("%s is in use by a running server; back it up through the server (--server ADDR) or stop it first: %w", data, err)
	}
	if err != nil {
		return backupJSON{}, err
	}
	defer s.Close()
	p, err := newPendingBackup(out)
	if err != nil {
		return backupJSON{}, err
	}
	defer p.discard()
	n, err := s.Backup(p.f)
	if err != nil {
		return backupJSON{}, fmt.Errorf("backup: copy %s: %w", path, err)
	}
	if err := p.finish(); err != nil {
		return backupJSON{}, err
	}
	items, seq, err := verifyBackupFile(a, p.tmp)
	if err != nil {
		return backupJSON{}, fmt.Errorf("the copy of %s %w; %s was not replaced", path, err, out)
	}
	if err := p.commit(); err != nil {
		return backupJSON{}, err
	}
	return backupJSON{Data: data, Out: out, Bytes: n, Items: items, Seq: seq}, nil
}

// pendingBackup is a backup being written to a temporary file beside its destination; it
// replaces the destination only on commit, after the caller has verified it.
type pendingBackup struct {
	f        *os.File // nil once finished
	tmp, out string
	done     bool // committed: nothing to remove
}

func newPendingBackup(out string) (*pendingBackup, error) {
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return &pendingBackup{f: f, tmp: f.Name(), out: out}, nil
}

// finish makes the temporary file durable and closes it, ready to be verified.
func (p *pendingBackup) finish() error {
	f := p.f
	p.f = nil
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("backup: sync %s: %w", p.tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("backup: close %s: %w", p.tmp, err)
	}
	return nil
}

// commit renames the verified file over the destination, durably.
func (p *pendingBackup) commit() error {
	if err := os.Rename(p.tmp, p.out); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	p.done = true
	return syncDir(filepath.Dir(p.out))
}

// discard removes the temporary file unless it was committed; deferred by every caller.
func (p *pendingBackup) discard() {
	if p.f != nil {
		_ = p.f.Close()
	}
	if !p.done {
		_ = os.Remove(p.tmp)
	}
}

// verifyBackupFile opens a backup read-only and runs the store's full check on it.
func verifyBackupFile(a *app, path string) (items int, seq uint64, err error) {
	s, err := store.Open(path, store.Options{ReadOnly: true, Logger: a.logger})
	if err != nil {
		return 0, 0, fmt.Errorf("does not open as a store: %w", err)
	}
	defer s.Close()
	if err := s.Check(); err != nil {
		return 0, 0, fmt.Errorf("fails its check: %w", err)
	}
	return s.Count(), s.Seq(), nil
}

// backupOnline receives a running server's Backup stream into a temporary file beside out,
// verifies it (offsets, size, SHA-256, then the store's own check) and only then renames it
// over out.
func backupOnline(ctx context.Context, a *app, cf *clientFlags, out string) (backupJSON, error) {
	conn, err := cf.dial()
	if err != nil {
		return backupJSON{}, err
	}
	defer conn.Close()

	p, err := newPendingBackup(out)
	if err != nil {
		return backupJSON{}, err
	}
	defer p.discard()

	// --timeout is an idle limit here: a large store takes as long as it takes, but a stream
	// that stops moving is given up.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var idle *time.Timer
	if cf.timeout > 0 {
		idle = time.AfterFunc(cf.timeout, func() {
			cancel(fmt.Errorf("no backup data from %s for %v (raise --timeout)", cf.server, cf.timeout))
		})
		defer idle.Stop()
	}
	fail := func(err error) (backupJSON, error) {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil && !errors.Is(cause, context.Canceled) {
			return backupJSON{}, cause
		}
		return backupJSON{}, describeRPCError(cf.server, err)
	}
	stream, err := conn.client.Backup(ctx, &lookalikev1.BackupRequest{})
	if err != nil {
		return fail(err)
	}
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(p.f, h), 1<<20)
	var received uint64
	var done *lookalikev1.BackupComplete
	for done == nil {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return backupJSON{}, fmt.Errorf("backup from %s ended early after %d bytes (no completion message); nothing was replaced", cf.server, received)
		}
		if err != nil {
			return fail(err)
		}
		if idle != nil {
			idle.Reset(cf.timeout)
		}
		if msg.GetOffset() != received {
			return backupJSON{}, fmt.Errorf("backup from %s: a piece at offset %d, expected %d", cf.server, msg.GetOffset(), received)
		}
		if _, err := w.Write(msg.GetData()); err != nil {
			return backupJSON{}, fmt.Errorf("backup: write %s: %w", p.tmp, err)
		}
		received += uint64(len(msg.GetData()))
		done = msg.GetComplete()
	}
	if err := w.Flush(); err != nil {
		return backupJSON{}, fmt.Errorf("backup: write %s: %w", p.tmp, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if done.GetSize() != received || done.GetSha256() != sum {
		return backupJSON{}, fmt.Errorf("backup from %s is damaged: received %d bytes with SHA-256 %s, the server sent %d bytes with %s",
			cf.server, received, sum, done.GetSize(), done.GetSha256())
	}
	if err := p.finish(); err != nil {
		return backupJSON{}, err
	}
	items, seq, err := verifyBackupFile(a, p.tmp)
	if err != nil {
		return backupJSON{}, fmt.Errorf("backup from %s received intact but %w", cf.server, err)
	}
	if uint64(items) != done.GetCount() || seq != done.GetStoreSeq() {
		return backupJSON{}, fmt.Errorf("backup from %s holds %d products at seq %d, the server said %d at seq %d",
			cf.server, items, seq, done.GetCount(), done.GetStoreSeq())
	}
	if err := p.commit(); err != nil {
		return backupJSON{}, err
	}
	return backupJSON{Server: cf.server, Out: out, Bytes: int64(received), Items: items, Seq: seq, SHA256: sum}, nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("backup: open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("backup: sync %s: %w", dir, err)
	}
	return nil
}

func runRestore(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "restore", "--data DIR BACKUP",
		"Replace the store in a data directory with a backup made by 'lookalike backup'. The backup is\n"+
			"verified before it replaces anything; the graph snapshot is removed so the next 'serve'\n"+
			"rebuilds it from the restored products. The server must be stopped.")
	data := fs.String("data", a.getenv("LOOKALIKE_DATA"), "data directory of 'lookalike serve' (env LOOKALIKE_DATA)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one BACKUP file, got %d arguments", fs.NArg())
	}
	if *data == "" {
		return usagef("--data is required")
	}
	if err := os.MkdirAll(*data, 0o755); err != nil {
		return err
	}
	dst := filepath.Join(*data, catalog.StoreFileName)
	if err := store.Restore(fs.Arg(0), dst, store.RestoreOptions{Logger: a.logger}); err != nil {
		if errors.Is(err, store.ErrInUse) {
			return fmt.Errorf("%s is in use by a running server; stop it first: %w", *data, err)
		}
		return err
	}
	if err := os.Remove(filepath.Join(*data, catalog.SnapshotFileName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("restored, but could not remove the old graph snapshot: %w", err)
	}
	fmt.Fprintf(a.stdout, "restored %s from %s\n", dst, fs.Arg(0))
	return ctx.Err()
}

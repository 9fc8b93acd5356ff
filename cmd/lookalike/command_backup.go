package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"lookalike/catalog"
	"lookalike/store"
)

// backupJSON is `lookalike backup --json`.
type backupJSON struct {
	Data  string `json:"data"`
	Out   string `json:"out"`
	Bytes int64  `json:"bytes"`
	Items int    `json:"items"`
	Seq   uint64 `json:"seq"`
}

func runBackup(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "backup", "--data DIR --out FILE",
		"Write a consistent, verified copy of a data directory's store file (products and vectors) to FILE.\n"+
			"The graph snapshot is derived data and is rebuilt from the store, so it is not copied.\n"+
			"The server must be stopped: it holds the store file locked while it runs.")
	data := fs.String("data", a.getenv("LOOKALIKE_DATA"), "data directory of 'lookalike serve' (env LOOKALIKE_DATA)")
	out := fs.String("out", "", "backup file to write (replaced atomically)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("takes no arguments")
	}
	if *data == "" || *out == "" {
		return usagef("--data and --out are required")
	}
	path := filepath.Join(*data, catalog.StoreFileName)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no store in %s: %w", *data, err)
	}
	s, err := store.Open(path, store.Options{ReadOnly: true, LockTimeout: time.Second, Logger: a.logger})
	if errors.Is(err, store.ErrInUse) {
		return fmt.Errorf("%s is in use by a running server; stop it (SIGTERM) and run backup again: %w", *data, err)
	}
	if err != nil {
		return err
	}
	defer s.Close()
	n, err := s.BackupFile(*out)
	if err != nil {
		return err
	}
	// Open the copy to prove it is a usable store, not just bytes.
	check, err := store.Open(*out, store.Options{ReadOnly: true, Logger: a.logger})
	if err != nil {
		return fmt.Errorf("backup written but does not open: %w", err)
	}
	defer check.Close()
	if err := check.Check(); err != nil {
		return fmt.Errorf("backup written but fails its check: %w", err)
	}
	res := backupJSON{Data: *data, Out: *out, Bytes: n, Items: check.Count(), Seq: check.Seq()}
	if *asJSON {
		return writeJSON(a.stdout, res)
	}
	fmt.Fprintf(a.stdout, "backed up %d products (seq %d, %d bytes) from %s to %s\n", res.Items, res.Seq, res.Bytes, *data, *out)
	return ctx.Err()
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

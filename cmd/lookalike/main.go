package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// Exit codes. Scripts can tell a mistake in the command line from a failed operation.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// command is one entry of the dispatch table.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, app *app, args []string) error
}

// app carries what every command may touch: the streams and the environment. Commands read the
// environment through getenv so tests can run them in-process without mutating os.Environ.
type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	logger *slog.Logger
}

// usageError marks a problem with the command line itself (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{msg: fmt.Sprintf(format, args...)}
}

// commands is the dispatch table; it is built by a function rather than held in a package
// variable so nothing global is mutable.
func commands() []command {
	cmds := []command{
		{"serve", "run the gRPC service on a data directory", runServe},
		{"ingest", "stream a CSV or JSON Lines manifest of products into a server", runIngest},
		{"restore", "replace a stopped server's store with a backup", runRestore},
		{"search", "find the products that look like an image", runSearch},
		{"similar", "more like this: products that look like a stored product (never itself)", runSimilar},
		{"calibrate", "measure the duplicate thresholds on the catalogue itself (synthetic copies as positives)", runCalibrate},
		{"check", "is this photo already in the catalogue? (closest product vs a threshold)", runCheck},
		{"dedup", "clusters of near-duplicate products with their tiers; resolve, decisions, forget record reviewers' verdicts", runDedup},
		{"get", "show one stored product and its photos", runGet},
		{"adapt", "learn a projection of the embeddings from the catalogue's own groups, validated on photos it did not fit (no server)", runAdapt},
		{"derive", "make a stopped catalogue's copy under a projection of its vectors, embedding nothing (no server)", runDerive},
		{"quality", "measure retrieval quality (R@k, mAP@10, P@10, catalogue shot in top 10) on labelled photos (no server)", runQuality},
		{"photo", "write the kept copy of a product's photo (JPEG)", runPhoto},
		{"health", "ask whether a server is SERVING; --wait polls until it is", runHealth},
		{"delete", "remove products by id", runDelete},
		{"stats", "product and photo counts, categories, model and index state", runStats},
		{"backup", "write a verified copy of a running server's store (or a stopped one's data directory)", runBackup},
		{"embed", "print the embedding vector of local images (no server)", runEmbed},
		{"model", "describe the embedding model: inputs, outputs, spec, identity (no server)", runModel},
		{"manifest", "write an ingest manifest for a shared dataset (grocery, clothing, abo)", runManifest},
		{"recompress", "re-encode an image as JPEG at another quality and size (for duplicate checks)", runRecompress},
	}
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	return cmds
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit code. Errors are reported as a
// single line on stderr.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{
		stdin:  stdin,
		stdout: stdout,
		stderr: stderr,
		getenv: getenv,
	}
	// The server narrates its life at INFO; the one-shot commands stay quiet unless asked.
	level := slog.LevelWarn
	if len(args) > 0 && args[0] == "serve" {
		level = slog.LevelInfo
	}
	if v := getenv("LOOKALIKE_LOG_LEVEL"); v != "" {
		level = logLevel(v, level)
	}
	a.logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if len(args) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		printUsage(stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(ctx, a, args[1:])
		return report(stderr, name, err)
	}
	fmt.Fprintf(stderr, "lookalike: unknown command %q (run 'lookalike help')\n", name)
	return exitUsage
}

// report turns a command's error into its one stderr line and exit code.
func report(stderr io.Writer, name string, err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "lookalike %s: %s (run 'lookalike %s --help')\n", name, oneLine(ue.msg), name)
		return exitUsage
	}
	fmt.Fprintf(stderr, "lookalike %s: %s\n", name, oneLine(err.Error()))
	return exitFailure
}

// oneLine keeps a failure to one line however the wrapped error was formatted.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func printUsage(w io.Writer) {
	fmt.Fprintf(w, "lookalike: visual-similarity search for product catalogues.\n\n")
	fmt.Fprintf(w, "Usage: lookalike <command> [flags] [arguments]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'lookalike <command> --help' for a command's flags.\n")
	fmt.Fprintf(w, "Exit codes: 0 success, 1 failure, 2 bad command line.\n")
}

// logLevel parses debug, info, warn or error, falling back when s is none of them.
func logLevel(s string, fallback slog.Level) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return fallback
	}
	return l
}

// newFlagSet returns a FlagSet whose --help prints the command's synopsis and flags to stdout
// and whose parse errors come back as usage errors instead of exiting.
func newFlagSet(a *app, name, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(a.stdout, "Usage: lookalike %s %s\n\n%s\n\nFlags:\n", name, synopsis, description)
		fs.SetOutput(a.stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parseFlags parses args with fs, allowing flags after positional arguments
// (`lookalike get ID --json`), which people type all the time.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err // the FlagSet has already printed its usage
			}
			return usageError{msg: err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		// "--" ends flag parsing for good.
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	// Re-parse nothing: record positional arguments on the FlagSet by parsing them after "--".
	return fs.Parse(append([]string{"--"}, positional...))
}

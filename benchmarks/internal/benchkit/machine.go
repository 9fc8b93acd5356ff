package benchkit

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// Machine says where and when a result was measured, so tables from different runs are never
// compared by mistake.
type Machine struct {
	CPU       string // "model name" from /proc/cpuinfo
	Cores     int    // logical CPUs visible to this process
	GoVersion string
	Date      time.Time
	Commit    string // short git commit, with "+dirty" when the tree has local changes
}

// Markdown renders the stamp as a short bullet list for the head of a results file.
func (m Machine) Markdown() string {
	return fmt.Sprintf("- machine: %s, %d cores, %s\n- date: %s\n- commit: %s\n",
		m.CPU, m.Cores, m.GoVersion, m.Date.UTC().Format(time.RFC3339), m.Commit)
}

// DescribeMachine reads the CPU model and the git commit of the checkout at root.
func DescribeMachine(ctx context.Context, root string) Machine {
	m := Machine{CPU: cpuModel(), Cores: runtime.NumCPU(), GoVersion: runtime.Version(), Date: time.Now()}
	m.Commit = gitCommit(ctx, root)
	return m
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(name) == "model name" {
			return strings.TrimSpace(value)
		}
	}
	return "unknown CPU"
}

func gitCommit(ctx context.Context, root string) string {
	out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	commit := strings.TrimSpace(string(out))
	// Only tracked files outside benchmarks/results count: the results a run writes (tracked
	// once committed) must not mark the run's own later files dirty.
	status, err := exec.CommandContext(ctx, "git", "-C", root, "status", "--porcelain", "--untracked-files=no",
		"--", ":(top)", ":(top,exclude)benchmarks/results").Output()
	if err == nil && len(strings.TrimSpace(string(status))) > 0 {
		commit += "+dirty"
	}
	return commit
}

// Package weaviatetest starts real Weaviate servers on loopback for tests and benchmarks: one
// node or a cluster, each node a weaviate-server process with its own ports and data
// directory, which a test can kill -9 and start again.
//
// The binary is $LOOKALIKE_WEAVIATE_BIN, else .lookalike/bin/weaviate-server at the
// repository root (LOOKALIKE_SETUP_WEAVIATE=1 scripts/setup.sh installs it). Without it the
// tests skip, unless LOOKALIKE_WEAVIATE_REQUIRED=1 (as make test sets) makes that a failure.
// For debugging, LOOKALIKE_WEAVIATE_KEEP=DIR keeps the nodes' data and logs under DIR and
// LOOKALIKE_WEAVIATE_LOG_LEVEL=info makes the logs say more.
package weaviatetest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Version is the weaviate-server the project pins (scripts/setup.sh installs it).
const Version = "v1.35.2"

// Binary returns the weaviate-server to run.
func Binary() (string, error) {
	if p := os.Getenv("LOOKALIKE_WEAVIATE_BIN"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, ".lookalike", "bin", "weaviate-server")
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("weaviate-server not installed at %s (LOOKALIKE_SETUP_WEAVIATE=1 scripts/setup.sh): %w", p, err)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("weaviate-server: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Node is one weaviate-server of a cluster.
type Node struct {
	// Name is its cluster host name (node1, node2, ...).
	Name string
	// URL is its REST address.
	URL string
	// Dir holds its data and its log (weaviate.log).
	Dir string

	env  []string
	cmd  *exec.Cmd
	done chan struct{} // closed when the running process has exited
	bin  string
}

// Cluster is a set of nodes that joined each other.
type Cluster struct {
	// Nodes are the cluster's nodes, node1 first.
	Nodes []*Node
}

// Start starts a cluster of n nodes under a temporary directory and waits until every node is
// ready and sees the others; the nodes are killed when the test ends. It skips the test when
// the binary is missing, unless LOOKALIKE_WEAVIATE_REQUIRED=1.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("LOOKALIKE_WEAVIATE_REQUIRED") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dir := t.TempDir()
	if keep := os.Getenv("LOOKALIKE_WEAVIATE_KEEP"); keep != "" {
		// Debugging: the nodes' data and logs stay in this directory after the test.
		dir = filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_"))
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	c, err := StartIn(dir, bin, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// StartIn is Start for a caller without a testing.TB (benchmarks): nodes live under dir, and
// the caller calls Stop.
func StartIn(dir, bin string, n int) (*Cluster, error) {
	ports, err := freePorts(7 * n)
	if err != nil {
		return nil, err
	}
	var join []string
	for i := range n {
		join = append(join, fmt.Sprintf("node%d:%d", i+1, ports[7*i+3]))
	}
	c := &Cluster{}
	for i := range n {
		p := ports[7*i : 7*i+7]
		// Weaviate expects the data port right after the gossip port and the Raft RPC port
		// right after the Raft port, so those pairs are taken together.
		gossip, raft := p[0], p[3]
		node := &Node{
			Name: fmt.Sprintf("node%d", i+1), URL: fmt.Sprintf("http://127.0.0.1:%d", p[2]),
			Dir: filepath.Join(dir, fmt.Sprintf("node%d", i+1)), bin: bin,
		}
		node.env = []string{
			"CLUSTER_IN_LOCALHOST=true", "CLUSTER_ADVERTISE_ADDR=127.0.0.1",
			"PERSISTENCE_DATA_PATH=" + node.Dir, "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED=true",
			"DEFAULT_VECTORIZER_MODULE=none", "DISABLE_TELEMETRY=true", "LOG_LEVEL=" + cmp.Or(os.Getenv("LOOKALIKE_WEAVIATE_LOG_LEVEL"), "warning"),
			// Replicas compare their hash trees this often and push what another lacks once
			// it is this old (30 s and 30 s by default), so a test waits seconds, not
			// minutes, for a restarted node to catch up.
			"ASYNC_REPLICATION_FREQUENCY=2s", "ASYNC_REPLICATION_PROPAGATION_DELAY=2s",
			"CLUSTER_HOSTNAME=" + node.Name,
			"CLUSTER_GOSSIP_BIND_PORT=" + strconv.Itoa(gossip), "CLUSTER_DATA_BIND_PORT=" + strconv.Itoa(p[1]),
			"CLUSTER_JOIN=" + fmt.Sprintf("127.0.0.1:%d", ports[0]),
			"RAFT_PORT=" + strconv.Itoa(raft), "RAFT_INTERNAL_RPC_PORT=" + strconv.Itoa(p[4]),
			"GRPC_PORT=" + strconv.Itoa(p[5]), "GO_PROFILING_PORT=" + strconv.Itoa(p[6]),
			"RAFT_BOOTSTRAP_EXPECT=" + strconv.Itoa(n), "RAFT_JOIN=" + strings.Join(join, ","),
			"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		}
		if err := os.MkdirAll(node.Dir, 0o755); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, node)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for i, node := range c.Nodes {
		if err := node.start(); err != nil {
			c.Stop()
			return nil, err
		}
		if i == 0 {
			// The others join through node1's gossip port and give up at once when it is
			// not listening yet.
			if err := waitListening(ctx, fmt.Sprintf("127.0.0.1:%d", ports[0])); err != nil {
				c.Stop()
				return nil, fmt.Errorf("weaviate node1 gossip port (log %s): %w", filepath.Join(node.Dir, "weaviate.log"), err)
			}
		}
	}
	for _, node := range c.Nodes {
		if err := node.WaitReady(ctx, n); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// waitListening waits until addr accepts TCP connections.
func waitListening(ctx context.Context, addr string) error {
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freePorts returns n distinct loopback ports free at the time of the call, seven per node
// (gossip, data, REST, Raft, Raft RPC, gRPC, profiling), the pairs (0,1) and (3,4) of every
// seven consecutive, as Weaviate wants them.
func freePorts(n int) ([]int, error) {
	var out []int
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for len(out) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		held = append(held, l)
		port := l.Addr().(*net.TCPAddr).Port
		slot := len(out) % 7
		if slot == 0 || slot == 3 {
			// This port and the next must both be free: hold the next one too.
			l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+1))
			if err != nil {
				continue
			}
			held = append(held, l2)
			out = append(out, port, port+1)
			continue
		}
		out = append(out, port)
	}
	return out, nil
}

func (n *Node) start() error {
	logFile, err := os.OpenFile(filepath.Join(n.Dir, "weaviate.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	port := strings.TrimPrefix(n.URL, "http://127.0.0.1:")
	cmd := exec.Command(n.bin, "--host", "127.0.0.1", "--port", port, "--scheme", "http")
	cmd.Env, cmd.Stdout, cmd.Stderr = n.env, logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		logFile.Close()
		close(done)
	}(n.done)
	return nil
}

// WaitReady waits until the node answers its readiness probe and lists want healthy nodes.
func (n *Node) WaitReady(ctx context.Context, want int) error {
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		if healthy(ctx, client, n.URL) >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("weaviate %s at %s not ready with %d healthy nodes (log %s): %w",
				n.Name, n.URL, want, filepath.Join(n.Dir, "weaviate.log"), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// healthy counts the nodes a node reports HEALTHY (0 when it does not answer or is not ready).
func healthy(ctx context.Context, client *http.Client, url string) int {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/.well-known/ready", nil)
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/nodes", nil)
	resp, err = client.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var body struct {
		Nodes []struct {
			Status string `json:"status"`
		} `json:"nodes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0
	}
	count := 0
	for _, nd := range body.Nodes {
		if nd.Status == "HEALTHY" {
			count++
		}
	}
	return count
}

// Kill sends SIGKILL to the node and waits for it to be gone.
func (n *Node) Kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	<-n.done
	n.cmd = nil
}

// Restart starts a killed node again on its ports and data, and waits until it is ready and
// sees want healthy nodes.
func (n *Node) Restart(ctx context.Context, want int) error {
	if err := n.start(); err != nil {
		return err
	}
	return n.WaitReady(ctx, want)
}

// PID is the running process's id, 0 when the node is not running.
func (n *Node) PID() int {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// URLs lists the nodes' REST addresses.
func (c *Cluster) URLs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.URL
	}
	return out
}

// Stop kills every node.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.Kill()
	}
}

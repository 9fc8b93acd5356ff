package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestUpgradeFromSchema1(t *testing.T) {
	const dim = 16
	ctx := context.Background()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(61, 62))
	h := historyV1(rng, 200, dim)
	path := filepath.Join(dir, "v1.db")
	h.write(t, path)
	original, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	unchanged := func(what string) {
		t.Helper()
		if now, err := os.ReadFile(path); err != nil || !bytes.Equal(now, original) {
			t.Fatalf("%s changed the schema-1 file (%v)", what, err)
		}
	}

	// A read-only open cannot upgrade, and says how to.
	_, err = Open(path, Options{ReadOnly: true, Logger: quietLogger})
	if !errors.Is(err, ErrSchemaVersion) || !strings.Contains(err.Error(), "read-write") {
		t.Fatalf("read-only Open of a schema-1 file: %v, want ErrSchemaVersion", err)
	}
	unchanged("a read-only Open")
	// An open for another model or dimension is refused before anything is rewritten: the
	// first release can still read the file.
	for _, opt := range []Options{{ModelIdentity: "another-model", Dim: dim}, {ModelIdentity: testModel, Dim: dim + 1}} {
		opt.Logger = quietLogger
		if _, err := Open(path, opt); !errors.Is(err, ErrModelMismatch) {
			t.Fatalf("Open(%+v) of a schema-1 file: %v, want ErrModelMismatch", opt, err)
		}
		unchanged("an Open with another model")
	}

	var events bytes.Buffer
	s, err := Open(path, Options{ModelIdentity: testModel, Dim: dim, Logger: slog.New(slog.NewJSONHandler(&events, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if !strings.Contains(events.String(), `"msg":"store upgraded"`) || !strings.Contains(events.String(), `"from_schema":1`) {
		t.Fatalf("the upgrade was not logged: %s", events.String())
	}
	verifyUpgraded(t, s, h, h.generation)

	// Nothing of schema 1 is left: no items bucket, every vector checksummed.
	err = s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketItemsV1) != nil {
			return errors.New("the items bucket is still there")
		}
		return tx.Bucket(bucketVectors).ForEach(func(k, v []byte) error {
			if len(v) != 4*dim+4 {
				return fmt.Errorf("vector %x has %d bytes", k, len(v))
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}

	// Writes continue where the first release stopped: the next new key is its next_key, an
	// upgraded product takes a second photo under a new key and keeps its old one.
	seq := s.Seq()
	fresh, err := s.Upsert(ctx, testProduct(rng, "after-upgrade", "shoes", dim))
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Photos[0].Key != h.nextKey {
		t.Fatalf("first key after the upgrade %d, want %d", fresh.Photos[0].Key, h.nextKey)
	}
	old, err := s.Get("item-00100")
	if err != nil {
		t.Fatal(err)
	}
	next := keepAll(old)
	next.Photos = append(next.Photos, testPhoto(rng, old.ID, "side", dim))
	grown, err := s.Upsert(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	if grown.Photos[0].Key != old.Photos[0].Key || grown.Photos[1].Key != h.nextKey+1 {
		t.Fatalf("keys %v after adding a photo to an upgraded product with key %d", keysOf(grown), old.Photos[0].Key)
	}
	want := append(slices.Clone(h.log), Change{Seq: seq + 1, Key: h.nextKey}, Change{Seq: seq + 2, Key: h.nextKey + 1})
	if got := changesSince(t, s, h.logFloor); !slices.Equal(got, want) {
		t.Fatalf("the log after new writes: %d changes, want %d", len(got), len(want))
	}
	mustCheck(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if schema, buckets := schemaOf(t, path); schema != SchemaVersion || slices.Contains(buckets, "items") {
		t.Fatalf("after the upgrade: schema %d, buckets %v", schema, buckets)
	}

	// A second open finds schema 2 and upgrades nothing; read-only works now.
	events.Reset()
	s, err = Open(path, Options{ReadOnly: true, Logger: slog.New(slog.NewJSONHandler(&events, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if strings.Contains(events.String(), "store upgraded") || s.Count() != len(h.items)+1 || s.Photos() != len(h.items)+2 {
		t.Fatalf("reopened: count %d photos %d, log %s", s.Count(), s.Photos(), events.String())
	}
	mustCheck(t, s)
}

func TestUpgradeOfAnEmptySchema1Store(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	h := newStoreV1(8, "0123456789abcdef0123456789abcdef")
	h.write(t, path)
	s := openTest(t, path, 8)
	verifyUpgraded(t, s, h, h.generation)
	p, err := s.Upsert(context.Background(), testProduct(rand.New(rand.NewPCG(1, 1)), "first", "", 8))
	if err != nil || p.Photos[0].Key != 1 || s.Seq() != 1 {
		t.Fatalf("first write after upgrading an empty store: %+v, %v", p, err)
	}
	mustCheck(t, s)
}

func TestRestoreOfSchema1Backup(t *testing.T) {
	const dim = 8
	dir := t.TempDir()
	h := historyV1(rand.New(rand.NewPCG(63, 64)), 150, dim)
	backup := filepath.Join(dir, "v1-backup.db")
	h.write(t, backup)
	original, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "restored.db")
	// Restore over an existing schema-2 store, as an operator would.
	s := openTest(t, dst, dim)
	if _, err := s.Upsert(context.Background(), testProduct(rand.New(rand.NewPCG(1, 1)), "replaced", "", dim)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Restore(backup, dst, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if now, err := os.ReadFile(backup); err != nil || !bytes.Equal(now, original) {
		t.Fatalf("Restore changed its backup (%v)", err)
	}
	if schema, _ := schemaOf(t, dst); schema != SchemaVersion {
		t.Fatalf("restored file has schema %d", schema)
	}
	// Already upgraded: it opens read-only, and with a new generation.
	r, err := Open(dst, Options{ReadOnly: true, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Generation() == h.generation || len(r.Generation()) != 32 {
		t.Fatalf("restored generation %q (backup's %q)", r.Generation(), h.generation)
	}
	verifyUpgraded(t, r, h, r.Generation())
}

// TestUpgradeIsOneTransaction damages schema-1 files so that the upgrade fails at its start,
// in its middle and at its very end: each time Open fails with ErrCorrupt and the file is
// exactly as it was, still schema 1, never half upgraded.
func TestUpgradeIsOneTransaction(t *testing.T) {
	const dim = 8
	rng := rand.New(rand.NewPCG(65, 66))
	h := historyV1(rng, 120, dim)
	var middle string
	for _, id := range slices.Sorted(maps.Keys(h.items)) {
		middle = id
		if id > "item-00060" {
			break
		}
	}
	tests := []struct {
		name   string
		damage func(tx *bolt.Tx) error
	}{
		{"a vector of another size", func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("vectors")).Put(keyBytes(h.items[middle].Key), make([]byte, 4*dim-4))
		}},
		{"an item record garbled half way", func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("items")).Put([]byte(middle), []byte{itemFormat1, 0, 0})
		}},
		{"the item count off by one (found at the end)", func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("meta")).Put([]byte("count"), seqBytes(uint64(len(h.items)+1)))
		}},
		{"a vector-only item whose vector is missing", func(tx *bolt.Tx) error {
			for _, it := range h.items {
				if it.SHA256 == "" && it.ID > middle {
					return tx.Bucket([]byte("vectors")).Delete(keyBytes(it.Key))
				}
			}
			return errors.New("no vector-only item after the middle")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "v1.db")
			h.write(t, path)
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(tc.damage); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{ModelIdentity: testModel, Dim: dim, Logger: quietLogger})
			if err == nil {
				s.Close()
				t.Fatal("Open upgraded a damaged schema-1 file")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "upgrade") {
				t.Fatalf("Open: %v, want ErrCorrupt naming the upgrade", err)
			}
			// bbolt writes a failed transaction's pages nowhere: the file is byte for byte the same.
			if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, before) {
				t.Fatalf("the failed upgrade changed the file (%v)", err)
			}
			if schema, buckets := schemaOf(t, path); schema != schemaV1 || !slices.Contains(buckets, "items") || slices.Contains(buckets, "products") {
				t.Fatalf("after a failed upgrade: schema %d, buckets %v", schema, buckets)
			}
			backup := filepath.Join(t.TempDir(), "restored.db")
			if err := Restore(path, backup, RestoreOptions{}); err == nil {
				t.Fatal("Restore accepted a damaged schema-1 backup")
			}
		})
	}
}

// Environment of the child process TestUpgradeSurvivesSIGKILL starts from its own binary.
const (
	upgradeChildEnv = "LOOKALIKE_STORE_UPGRADE_CHILD"
	upgradePathEnv  = "LOOKALIKE_STORE_UPGRADE_PATH"
	upgradeDim      = 96
	upgradeItems    = 4000
	upgradeCycles   = 8
	// upgradeOpening and upgradeOpened are the lines the child prints just before it calls
	// Open and once Open returned.
	upgradeOpening = "opening the schema-1 store"
	upgradeOpened  = "opened"
)

// TestUpgradeSurvivesSIGKILL kills a process that is upgrading a schema-1 file of a few
// thousand items. The child prints a line just before Open and another once Open returned.
// The first cycle lets it finish and measures how long its upgrade takes; each later cycle
// kills it a different while after the first line, from at once to a little past that
// measured time, so kills land before the upgrade's commit, inside it and after it. Whatever
// the point, the file must then open (upgrading it if still schema 1), pass Check and hold
// every item. Where each kill landed is read from the file afterwards (still schema 1 and
// byte for byte the same; still schema 1 but with pages of the unfinished commit written;
// upgraded) and logged, not required: the property must hold at every point, and the
// timing only spreads the points.
func TestUpgradeSurvivesSIGKILL(t *testing.T) {
	if os.Getenv(upgradeChildEnv) == "1" {
		upgradeChild(t)
		return
	}
	dir := t.TempDir()
	h := historyV1(rand.New(rand.NewPCG(67, 68)), upgradeItems, upgradeDim)
	template := filepath.Join(dir, "template.db")
	h.write(t, template)
	v1, err := os.ReadFile(template)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "catalog.db")
	var took time.Duration // the child's upgrade, measured in cycle 0
	outcomes := map[string]int{}
	for cycle := range upgradeCycles {
		if err := os.WriteFile(path, v1, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestUpgradeSurvivesSIGKILL$", "-test.count=1")
		cmd.Env = append(os.Environ(), upgradeChildEnv+"=1", upgradePathEnv+"="+path)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(stdout)
		var seen []string
		waitFor := func(line string) {
			t.Helper()
			for lines.Scan() {
				seen = append(seen, lines.Text())
				if lines.Text() == line {
					return
				}
			}
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("cycle %d: the child never printed %q; its output:\n%s\n%s", cycle, line, strings.Join(seen, "\n"), stderr.String())
		}
		waitFor(upgradeOpening)
		reached := time.Now()
		var delay time.Duration
		if cycle == 0 {
			waitFor(upgradeOpened)
			took = time.Since(reached)
		} else {
			// From 0 to 1.25 × took: this spreads the kills; nothing below depends on where
			// they land.
			delay = took * time.Duration(cycle-1) * 5 / (4 * (upgradeCycles - 2))
			time.Sleep(delay)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("cycle %d: the child ended with %v before the kill; its output:\n%s", cycle, err, stderr.String())
		}

		schema, _ := schemaOf(t, path)
		outcome := "upgraded"
		if schema == schemaV1 {
			now, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			outcome = "still schema 1, untouched"
			if !bytes.Equal(now, v1) {
				outcome = "still schema 1, killed inside the upgrade's commit"
			}
		}
		if cycle == 0 && outcome != "upgraded" {
			t.Fatalf("the child said Open returned, but the file is %s", outcome)
		}
		outcomes[outcome]++
		s := openTest(t, path, upgradeDim)
		verifyUpgraded(t, s, h, h.generation)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("cycle %d: killed %v after the child reached Open: %s", cycle, delay.Round(time.Millisecond), outcome)
	}
	t.Logf("the child's Open with the upgrade of %d items took %v; kills: %v", upgradeItems, took.Round(time.Millisecond), outcomes)
}

// upgradeChild announces Open, opens (upgrading) and waits to be killed.
func upgradeChild(t *testing.T) {
	fmt.Println(upgradeOpening)
	s, err := Open(os.Getenv(upgradePathEnv), Options{ModelIdentity: testModel, Dim: upgradeDim, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fmt.Println(upgradeOpened)
	time.Sleep(crashChildLimit)
	t.Fatal("the child was not killed in time")
}

package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// vectorFor derives a vector from an id, so any reader can tell whether a stored
// vector is the one written for that id.
func vectorFor(id string, dim int) []float32 {
	var seed uint64
	for _, c := range []byte(id) {
		seed = seed*131 + uint64(c)
	}
	return randomVector(rand.New(rand.NewPCG(seed, uint64(len(id)))), dim)
}

// backupProduct is the i-th product TestBackupConcurrentWithWrites writes.
func backupProduct(i, dim int) Product {
	id := fmt.Sprintf("item-%04d", i)
	ph := Photo{ID: mainPhoto, Vector: vectorFor(id, dim)}
	if i%3 == 0 {
		ph.Kept = []byte("jpeg of " + id)
	}
	return Product{ID: id, Category: fmt.Sprint(i % 4), Photos: []Photo{ph}}
}

func TestBackupConcurrentWithWrites(t *testing.T) {
	const dim = 24
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, filepath.Join(dir, "live.db"), dim)

	// Products of one photo (every third with a kept photo) are only ever inserted, in id
	// order, so any consistent snapshot holds exactly the ids 0..n-1 under keys 1..n with their
	// own vectors and kept photos, and Seq n.
	const total = 300
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range total {
			if _, err := s.Upsert(ctx, backupProduct(i, dim)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var backups []string
	for b := range 4 {
		path := filepath.Join(dir, fmt.Sprintf("backup-%d.db", b))
		if _, err := s.BackupFile(path); err != nil {
			t.Fatal(err)
		}
		backups = append(backups, path)
	}
	var streamed bytes.Buffer
	info, err := s.BackupWithInfo(&streamed)
	if err != nil || info.Bytes != int64(streamed.Len()) {
		t.Fatalf("Backup: %d bytes reported, %d written, %v", info.Bytes, streamed.Len(), err)
	}
	wg.Wait()
	streamedPath := filepath.Join(dir, "streamed.db")
	if err := os.WriteFile(streamedPath, streamed.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	backups = append(backups, streamedPath)

	for _, backup := range backups {
		restored := filepath.Join(dir, "restored-"+filepath.Base(backup))
		if err := Restore(backup, restored, RestoreOptions{}); err != nil {
			t.Fatalf("Restore(%s): %v", backup, err)
		}
		r := openTest(t, restored, dim)
		if err := r.Check(); err != nil {
			t.Fatalf("%s: %v", backup, err)
		}
		count := r.Count()
		if r.Seq() != uint64(count) || count > total || r.Generation() == s.Generation() {
			t.Fatalf("%s: seq %d count %d generation %s (live %s)", backup, r.Seq(), count, r.Generation(), s.Generation())
		}
		if r.Photos() != count {
			t.Fatalf("%s: %d photos for %d products", backup, r.Photos(), count)
		}
		if backup == streamedPath && (r.Seq() != info.Seq || count != info.Products || count != info.Photos) {
			t.Fatalf("the streamed backup holds seq %d and %d items; BackupWithInfo said %+v", r.Seq(), count, info)
		}
		i := 0
		err := r.ForEach(func(p Product) error {
			want := backupProduct(i, dim)
			if p.ID != want.ID || len(p.Photos) != 1 || p.Photos[0].Key != uint32(i+1) || p.Photos[0].KeptBytes != len(want.Photos[0].Kept) {
				return fmt.Errorf("position %d holds %+v, want %q under key %d", i, p, want.ID, i+1)
			}
			i++
			return nil
		})
		if err != nil || i != count {
			t.Fatalf("%s: %v (visited %d of %d)", backup, err, i, count)
		}
		i = 0
		err = r.ForEachVector(func(key uint32, vec []float32) error {
			if want := backupProduct(i, dim); key != uint32(i+1) || !sameVector(vec, want.Photos[0].Vector) {
				return fmt.Errorf("key %d: not the vector of %q", key, want.ID)
			}
			i++
			return nil
		})
		if err != nil || i != count {
			t.Fatalf("%s: ForEachVector: %v (visited %d of %d)", backup, err, i, count)
		}
		st, err := r.Stats()
		if err != nil || st.KeptPhotos != (count+2)/3 {
			t.Fatalf("%s: %d kept photos for %d products: %v", backup, st.KeptPhotos, count, err)
		}
		for i := 0; i < count; i += 3 {
			if jpeg, err := r.KeptPhoto(uint32(i + 1)); err != nil || !bytes.Equal(jpeg, backupProduct(i, dim).Photos[0].Kept) {
				t.Fatalf("%s: kept photo of key %d: %v", backup, i+1, err)
			}
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRestoreReplacesAClosedStore(t *testing.T) {
	const dim = 8
	ctx := context.Background()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(21, 22))
	src := openTest(t, filepath.Join(dir, "src.db"), dim)
	in := withPhotos(rng, "kept", "c", dim, 2)
	in.Photos[1].Kept = []byte("a kept jpeg")
	want, err := src.Upsert(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(dir, "backup.db")
	if _, err := src.BackupFile(backup); err != nil {
		t.Fatal(err)
	}
	dstPath := filepath.Join(dir, "dst.db")
	dst := openTest(t, dstPath, dim)
	if _, err := dst.Upsert(ctx, testProduct(rng, "replaced", "c", dim)); err != nil {
		t.Fatal(err)
	}

	if err := Restore(backup, dstPath, RestoreOptions{}); !errors.Is(err, ErrInUse) {
		t.Fatalf("Restore over an open store: %v, want ErrInUse", err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	// The restore event goes to the caller's logger and never to the process-wide default.
	var callerLog, globalLog bytes.Buffer
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewTextHandler(&globalLog, nil)))
	if err := Restore(backup, dstPath, RestoreOptions{Logger: slog.New(slog.NewJSONHandler(&callerLog, nil))}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(callerLog.String(), `"msg":"store restored"`) || globalLog.Len() != 0 {
		t.Fatalf("restore logged %q to the caller's logger and %q to the default one", callerLog.String(), globalLog.String())
	}
	dst = openTest(t, dstPath, dim)
	got, err := dst.Get("kept")
	if err != nil {
		t.Fatal(err)
	}
	sameProduct(t, got, want)
	for i, ph := range got.Photos {
		if vec, err := dst.Vector(ph.Key); err != nil || !sameVector(vec, in.Photos[i].Vector) {
			t.Fatalf("restored vector of %s: %v", ph.ID, err)
		}
	}
	if jpeg, err := dst.KeptPhoto(got.Photos[1].Key); err != nil || string(jpeg) != "a kept jpeg" {
		t.Fatalf("restored kept photo: %q, %v", jpeg, err)
	}
	mustCheck(t, dst)
	if _, err := dst.Get("replaced"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the old content survived the restore: %v", err)
	}
	if dst.Count() != 1 || dst.Seq() != src.Seq() || dst.Generation() == src.Generation() {
		t.Fatalf("restored: count %d seq %d generation %s (source %d, %s)", dst.Count(), dst.Seq(), dst.Generation(), src.Seq(), src.Generation())
	}
}

func TestRestoreRejectsDamagedBackups(t *testing.T) {
	const dim = 16
	ctx := context.Background()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(23, 24))
	src := openTest(t, filepath.Join(dir, "src.db"), dim)
	batch := make([]Product, 200)
	for i := range batch {
		batch[i] = withPhotos(rng, fmt.Sprint("id-", i), fmt.Sprint(i%5), dim, 1+i%3)
		if i%4 == 0 {
			batch[i].Photos[0].Kept = bytes.Repeat([]byte{byte(i)}, 50+i)
		}
	}
	if _, err := src.UpsertBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	var good bytes.Buffer
	if _, err := src.Backup(&good); err != nil {
		t.Fatal(err)
	}
	pageSize := os.Getpagesize()
	garble := func(from, to int) []byte {
		b := bytes.Clone(good.Bytes())
		for i := from; i < to && i < len(b); i++ {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	foreign := filepath.Join(dir, "foreign.db")
	db, err := bolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("x")); return err }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	foreignBytes, err := os.ReadFile(foreign)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		backup []byte
	}{
		{"empty", nil},
		{"text", []byte(strings.Repeat("hello ", 5000))},
		{"truncated to half", good.Bytes()[:good.Len()/2]},
		{"both meta pages garbled", garble(0, 2*pageSize)},
		{"every data page garbled", garble(2*pageSize, good.Len())},
		{"a bbolt file that is not a store", foreignBytes},
	}
	dstPath := filepath.Join(dir, "dst.db")
	dst := openTest(t, dstPath, dim)
	if _, err := dst.Upsert(ctx, testProduct(rng, "original", "c", dim)); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	original, err := os.ReadFile(dstPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			backup := filepath.Join(t.TempDir(), "backup.db")
			if err := os.WriteFile(backup, tc.backup, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := Restore(backup, dstPath, RestoreOptions{}); err == nil {
				t.Fatal("Restore accepted a damaged backup")
			}
			if now, err := os.ReadFile(dstPath); err != nil || !bytes.Equal(now, original) {
				t.Fatalf("a failed Restore changed the destination (%v)", err)
			}
		})
	}

	// Damage to one random page may land on a free page, where it harms nothing; wherever it
	// lands, Restore must either refuse the backup or produce a store that passes Check.
	t.Run("one garbled page", func(t *testing.T) {
		pages := good.Len() / pageSize
		for range 8 {
			page := 2 + rng.IntN(pages-2)
			backup := filepath.Join(t.TempDir(), "backup.db")
			if err := os.WriteFile(backup, garble(page*pageSize, (page+1)*pageSize), 0o600); err != nil {
				t.Fatal(err)
			}
			restored := filepath.Join(t.TempDir(), "restored.db")
			if err := Restore(backup, restored, RestoreOptions{}); err != nil {
				continue
			}
			r := openTest(t, restored, dim)
			if err := r.Check(); err != nil {
				t.Fatalf("page %d: Restore accepted a backup that fails Check: %v", page, err)
			}
		}
	})
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

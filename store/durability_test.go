package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Environment of the child process TestDurabilityAfterSIGKILL starts from its own binary.
const (
	crashChildEnv   = "LOOKALIKE_STORE_CRASH_CHILD"
	crashStoreEnv   = "LOOKALIKE_STORE_CRASH_PATH"
	crashAckEnv     = "LOOKALIKE_STORE_CRASH_ACK"
	crashRoundEnv   = "LOOKALIKE_STORE_CRASH_ROUND"
	crashDim        = 64
	crashRounds     = 6
	crashChildLimit = 20 * time.Second
)

// TestDurabilityAfterSIGKILL kills a writing child process at random moments. The child
// appends "+id" or "-id" to a side file only after Upsert, UpsertBatch or Delete returned, so
// every line there was acknowledged; after each kill the parent reopens the store and demands
// every acknowledged upsert present with all its photos and their exact vectors, every
// acknowledged delete gone, nothing stored that was never written, no product stored in part,
// and a clean Check.
func TestDurabilityAfterSIGKILL(t *testing.T) {
	if os.Getenv(crashChildEnv) == "1" {
		crashChild(t)
		return
	}
	dir := t.TempDir()
	storePath := filepath.Join(dir, "catalog.db")
	ackPath := filepath.Join(dir, "acks.txt")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for round := range crashRounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestDurabilityAfterSIGKILL$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"=1", crashStoreEnv+"="+storePath,
			crashAckEnv+"="+ackPath, crashRoundEnv+"="+strconv.Itoa(round))
		var output bytes.Buffer
		cmd.Stdout, cmd.Stderr = &output, &output
		before := ackLines(t, ackPath)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill only once this child has acknowledged something, then at a random moment.
		// The deadline only catches a child that never acknowledges; a loaded machine may be slow.
		deadline := time.Now().Add(2 * time.Minute)
		for ackLines(t, ackPath) == before {
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("round %d: the child acknowledged nothing in two minutes; its output:\n%s", round, output.String())
			}
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: the child ended with %v before the kill; its output:\n%s", round, err, output.String())
		}
		verifyAcknowledged(t, storePath, ackPath, round)
	}
}

// crashPhotos is how many photos the crash child gives a product: 1 to 3.
func crashPhotos(id string) int { return 1 + int(id[len(id)-1])%3 }

// crashProduct is what the crash child writes under an id: every photo's vector derived from
// the id and the photo id, so a reader can tell whether a stored product is whole.
func crashProduct(id string) Product {
	p := Product{ID: id, Category: "c" + id[len(id)-1:]}
	for i := range crashPhotos(id) {
		ph := Photo{ID: fmt.Sprint("p", i)}
		ph.Vector = vectorFor(id+"/"+ph.ID, crashDim)
		if i == 1 {
			ph.Kept = []byte("kept " + id)
		}
		p.Photos = append(p.Photos, ph)
	}
	return p
}

// crashConsistent checks a product read back with its vectors against crashProduct.
func crashConsistent(p Product) error {
	want := crashProduct(p.ID)
	if len(p.Photos) != len(want.Photos) {
		return fmt.Errorf("%q holds %d photos, was written with %d", p.ID, len(p.Photos), len(want.Photos))
	}
	for i, ph := range p.Photos {
		if ph.ID != want.Photos[i].ID || !sameVector(ph.Vector, want.Photos[i].Vector) || ph.KeptBytes != len(want.Photos[i].Kept) {
			return fmt.Errorf("%q photo %d (%s) holds another vector or kept photo", p.ID, i, ph.ID)
		}
	}
	return nil
}

func ackLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte{'\n'})
}

func verifyAcknowledged(t *testing.T, storePath, ackPath string, round int) {
	t.Helper()
	s := openTest(t, storePath, crashDim)
	defer s.Close()
	if err := s.Check(); err != nil {
		t.Fatalf("round %d: Check after SIGKILL: %v", round, err)
	}
	f, err := os.Open(ackPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// "?id" and "~id" announce an upsert and a delete before the call; "+id" and "-id"
	// acknowledge them after it returned. Only announced, unacknowledged writes (the ones in
	// flight at each kill) may or may not have happened.
	present, deleted := map[string]bool{}, map[string]bool{}
	announced, maybeDeleted := map[string]bool{}, map[string]bool{}
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break // a line cut by the kill has no newline
		}
		line = strings.TrimSuffix(line, "\n")
		id := line[1:]
		switch line[0] {
		case '?':
			announced[id] = true
		case '~':
			maybeDeleted[id] = true
		case '+':
			present[id] = true
		case '-':
			delete(present, id)
			deleted[id] = true
		default:
			t.Fatalf("bad ack line %q", line)
		}
	}
	for id := range present {
		p, err := s.GetWithVectors(id)
		if errors.Is(err, ErrNotFound) && maybeDeleted[id] {
			continue
		}
		if err != nil {
			t.Fatalf("round %d: acknowledged %q lost: %v", round, id, err)
		}
		if err := crashConsistent(p); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, ph := range p.Photos {
			if vec, err := s.Vector(ph.Key); err != nil || !sameVector(vec, vectorFor(id+"/"+ph.ID, crashDim)) {
				t.Fatalf("round %d: key %d of %q: %v", round, ph.Key, id, err)
			}
			if ph.KeptBytes > 0 {
				if jpeg, err := s.KeptPhoto(ph.Key); err != nil || string(jpeg) != "kept "+id {
					t.Fatalf("round %d: kept photo of %q: %q, %v", round, id, jpeg, err)
				}
			}
		}
	}
	var stored []string
	err = s.ForEach(func(p Product) error {
		switch {
		case deleted[p.ID]:
			return fmt.Errorf("acknowledged delete of %q undone", p.ID)
		case !present[p.ID] && !announced[p.ID]:
			return fmt.Errorf("%q stored but never written", p.ID)
		case len(p.Photos) != crashPhotos(p.ID):
			return fmt.Errorf("%q holds %d photos, was written with %d", p.ID, len(p.Photos), crashPhotos(p.ID))
		}
		stored = append(stored, p.ID)
		return nil
	})
	if err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	// Every stored product, acknowledged or not, is whole: all its photos with their vectors.
	for _, id := range stored {
		p, err := s.GetWithVectors(id)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if err := crashConsistent(p); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	t.Logf("round %d: %d acknowledged items present, %d deletes honoured, seq %d", round, len(present), len(deleted), s.Seq())
}

// crashChild writes until it is killed. It runs inside the test binary, so it reports
// problems by exiting, which the parent sees as a death before the kill.
func crashChild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), crashChildLimit)
	defer cancel()
	s, err := Open(os.Getenv(crashStoreEnv), Options{ModelIdentity: testModel, Dim: crashDim, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	ack, err := os.OpenFile(os.Getenv(crashAckEnv), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	round := os.Getenv(crashRoundEnv)
	// One unbuffered write per announcement (before the store call) and per acknowledgement
	// (after it returned).
	acknowledge := func(lines ...string) {
		if _, err := ack.WriteString(strings.Join(lines, "")); err != nil {
			t.Fatal(err)
		}
	}
	item := crashProduct
	isBatch := func(i int) bool { return i%5 == 4 }
	// Iteration i may delete what iteration i-3 upserted alone (i-3 is never itself a delete).
	isDelete := func(i int) bool { return i%7 == 6 && !isBatch(i-3) }
	for i := 0; ctx.Err() == nil; i++ {
		id := fmt.Sprintf("r%s-%06d", round, i)
		switch {
		case isBatch(i):
			batch := []Product{item(id + "a"), item(id + "b"), item(id + "c")}
			acknowledge("?"+batch[0].ID+"\n", "?"+batch[1].ID+"\n", "?"+batch[2].ID+"\n")
			if _, err := s.UpsertBatch(ctx, batch); err != nil {
				t.Fatal(err)
			}
			acknowledge("+"+batch[0].ID+"\n", "+"+batch[1].ID+"\n", "+"+batch[2].ID+"\n")
		case isDelete(i):
			victim := fmt.Sprintf("r%s-%06d", round, i-3)
			acknowledge("~" + victim + "\n")
			if _, err := s.Delete(ctx, victim); err != nil {
				t.Fatal(err)
			}
			acknowledge("-" + victim + "\n")
		default:
			acknowledge("?" + id + "\n")
			if _, err := s.Upsert(ctx, item(id)); err != nil {
				t.Fatal(err)
			}
			acknowledge("+" + id + "\n")
		}
	}
	t.Fatal("the child was not killed in time")
}

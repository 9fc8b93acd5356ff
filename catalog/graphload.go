package catalog

import (
	"runtime"
	"sync"

	"lookalike/index"
)

// graphLoader applies many insertions and deletions to a graph from several goroutines, for
// a rebuild or the replay of a start: an HNSW insertion's long part (its candidate search)
// runs beside the others', so loading goes as fast as the cores allow. Everything for one key
// goes to the same goroutine, in the order given, so the graph ends as a one-by-one load
// would leave it (its links may differ; its content does not).
type graphLoader struct {
	graph  *index.HNSW
	queues []chan graphOp
	wg     sync.WaitGroup

	mu  sync.Mutex
	err error // the first insertion that failed
}

// graphOp inserts vec under key, or deletes key when vec is nil.
type graphOp struct {
	key index.Key
	vec []float32
}

func newGraphLoader(graph *index.HNSW) *graphLoader {
	l := &graphLoader{graph: graph}
	for range runtime.GOMAXPROCS(0) {
		q := make(chan graphOp, 256)
		l.queues = append(l.queues, q)
		l.wg.Go(func() {
			for op := range q {
				l.apply(op)
			}
		})
	}
	return l
}

func (l *graphLoader) apply(op graphOp) {
	if op.vec == nil {
		l.graph.Delete(op.key)
		return
	}
	if err := l.graph.Add(op.key, op.vec); err != nil {
		l.mu.Lock()
		if l.err == nil {
			l.err = err
		}
		l.mu.Unlock()
	}
}

// add queues an insertion; vec is the loader's from now on.
func (l *graphLoader) add(key index.Key, vec []float32) {
	l.queues[int(key)%len(l.queues)] <- graphOp{key: key, vec: vec}
}

// delete queues a deletion.
func (l *graphLoader) delete(key index.Key) {
	l.queues[int(key)%len(l.queues)] <- graphOp{key: key}
}

// wait applies everything queued and returns the first insertion's error, if any. The
// loader takes nothing more after.
func (l *graphLoader) wait() error {
	for _, q := range l.queues {
		close(q)
	}
	l.wg.Wait()
	return l.err
}

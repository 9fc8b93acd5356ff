// Package benchkit holds what every Lookalike benchmark program shares: the machine stamp
// (CPU, cores, date, commit), vector file formats exchanged with the Python peers (.fvecs,
// .ivecs), exact ground truth, recall, latency percentiles, markdown tables and the
// recall-vs-QPS plot.
//
// It must never import the packages under test (index, embed, store, catalog, server) so that
// the ground truth and the recall it computes are independent of the code being measured.
package benchkit

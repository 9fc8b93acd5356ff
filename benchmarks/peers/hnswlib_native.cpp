// hnswlib_native: hnswlib's own headers (Debian libhnswlib-dev) compiled for this machine, as
// the reference peer of Lookalike's ANN benchmarks. annbench compiles it at bench time with
//
//   g++ -O3 -march=native -std=c++17 -o hnswlib_native hnswlib_native.cpp
//
// so the distance loops use whatever SIMD the CPU has (AVX on this machine; AVX-512 where the
// CPU has it), unlike Debian's python3-hnswlib which is built for baseline x86-64.
//
// It speaks the protocol of ann_peers.py: it reads <workdir>/base.fvecs and queries.fvecs,
// builds the index on one thread, writes {"event":"built",...} and {"event":"ready"} lines on
// stdout, then answers commands on stdin, one a line, "<library> <ef> <k> <min_seconds> <ids
// path or ->": repeat whole passes over the queries (one searchKnn call per query, in this
// process, so there is no interpreter cost to amortise) for at least min_seconds, write the
// first pass's top-k ids, best first, as .ivecs, and reply {"event":"measured","qps":...}.
#include <hnswlib/hnswlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Matrix {
    size_t rows = 0, dim = 0;
    std::vector<float> data;
    const float *row(size_t i) const { return data.data() + i * dim; }
};

[[noreturn]] void die(const std::string &msg) {
    std::cerr << "hnswlib_native: " << msg << std::endl;
    std::exit(1);
}

// readFvecs reads the .fvecs layout: per row an int32 dimension, then that many float32s.
Matrix readFvecs(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) die("cannot open " + path);
    in.seekg(0, std::ios::end);
    size_t size = static_cast<size_t>(in.tellg());
    in.seekg(0, std::ios::beg);
    int32_t dim = 0;
    if (!in.read(reinterpret_cast<char *>(&dim), 4) || dim <= 0) die(path + ": bad header");
    size_t rowBytes = 4 + 4 * static_cast<size_t>(dim);
    if (size % rowBytes != 0) die(path + ": size is not a whole number of rows");
    Matrix m;
    m.dim = static_cast<size_t>(dim);
    m.rows = size / rowBytes;
    m.data.resize(m.rows * m.dim);
    in.seekg(0, std::ios::beg);
    for (size_t i = 0; i < m.rows; i++) {
        int32_t d = 0;
        in.read(reinterpret_cast<char *>(&d), 4);
        if (d != dim) die(path + ": rows of different dimension");
        in.read(reinterpret_cast<char *>(m.data.data() + i * m.dim), 4 * m.dim);
    }
    if (!in) die(path + ": short read");
    return m;
}

void writeIvecs(const std::string &path, const std::vector<std::vector<int32_t>> &ids) {
    std::ofstream out(path, std::ios::binary);
    if (!out) die("cannot create " + path);
    for (const auto &row : ids) {
        int32_t n = static_cast<int32_t>(row.size());
        out.write(reinterpret_cast<const char *>(&n), 4);
        out.write(reinterpret_cast<const char *>(row.data()), 4 * row.size());
    }
    if (!out) die("write " + path);
}

// rssBytes is the resident set size, from /proc/self/statm.
long rssBytes() {
    std::ifstream in("/proc/self/statm");
    long pages = 0, resident = 0;
    in >> pages >> resident;
    return resident * sysconf(_SC_PAGESIZE);
}

double now() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string arg(int argc, char **argv, const std::string &name, const char *def) {
    for (int i = 1; i + 1 < argc; i++) {
        if (name == argv[i]) return argv[i + 1];
    }
    if (def == nullptr) die("missing " + name);
    return def;
}

}  // namespace

int main(int argc, char **argv) {
    std::string workdir = arg(argc, argv, "--workdir", nullptr);
    std::string metric = arg(argc, argv, "--metric", nullptr);
    size_t M = std::stoul(arg(argc, argv, "--M", "16"));
    size_t efc = std::stoul(arg(argc, argv, "--ef-construction", "200"));
    size_t seed = std::stoul(arg(argc, argv, "--seed", "1"));
    std::string library = arg(argc, argv, "--library", "hnswlib");

    // The base is read before the RSS baseline so that bytes per vector counts the index
    // (which copies every vector into its level-0 block), as ann_peers.py counts it.
    Matrix base = readFvecs(workdir + "/base.fvecs");
    Matrix queries = readFvecs(workdir + "/queries.fvecs");
    if (queries.dim != base.dim) die("queries and base differ in dimension");

    std::unique_ptr<hnswlib::SpaceInterface<float>> space;
    if (metric == "l2") {
        space.reset(new hnswlib::L2Space(base.dim));
    } else if (metric == "ip") {
        space.reset(new hnswlib::InnerProductSpace(base.dim));
    } else {
        die("metric must be l2 or ip");
    }
    long before = rssBytes();
    double t0 = now();
    auto index = std::make_unique<hnswlib::HierarchicalNSW<float>>(space.get(), base.rows, M, efc, seed);
    for (size_t i = 0; i < base.rows; i++) index->addPoint(base.row(i), i);
    double buildSeconds = now() - t0;
    double perVector = double(rssBytes() - before) / double(base.rows);
    std::printf("{\"event\": \"built\", \"library\": \"%s\", \"build_s\": %.6f, \"bytes_per_vector\": %.1f}\n",
                library.c_str(), buildSeconds, perVector);
    std::printf("{\"event\": \"ready\"}\n");
    std::fflush(stdout);

    std::string line;
    while (std::getline(std::cin, line)) {
        std::istringstream cmd(line);
        std::string lib, idsPath;
        size_t ef = 0, k = 0;
        double minSeconds = 0;
        if (!(cmd >> lib >> ef >> k >> minSeconds >> idsPath)) continue;
        index->setEf(std::max(ef, k));
        std::vector<std::vector<int32_t>> first;
        size_t answered = 0;
        double start = now(), elapsed = 0;
        for (int pass = 0;; pass++) {
            for (size_t q = 0; q < queries.rows; q++) {
                auto res = index->searchKnn(queries.row(q), k);
                if (pass == 0) {
                    // The queue pops farthest first.
                    std::vector<int32_t> ids(res.size());
                    for (size_t i = res.size(); i-- > 0;) {
                        ids[i] = static_cast<int32_t>(res.top().second);
                        res.pop();
                    }
                    first.push_back(std::move(ids));
                }
            }
            answered += queries.rows;
            elapsed = now() - start;
            if (elapsed >= minSeconds) break;
        }
        if (idsPath != "-") writeIvecs(idsPath, first);
        std::printf("{\"event\": \"measured\", \"library\": \"%s\", \"ef\": %zu, \"qps\": %.3f}\n", lib.c_str(), ef,
                    double(answered) / elapsed);
        std::fflush(stdout);
    }
    return 0;
}

// testsvc is the Go service quench's tests capture evidence from: it serves
// net/http/pprof, a Prometheus-format /metrics with the Go runtime series,
// and handlers with known hot spots (a CPU burner, a goroutine leak, an
// allocator). Standard library only, so it builds offline.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"
)

var (
	leakMu sync.Mutex
	leaked []chan struct{}
	sink   [][]byte
)

// leakyWorker blocks forever on its channel: the goroutine leak.
func leakyWorker(c chan struct{}) {
	<-c
}

func leak(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	leakMu.Lock()
	for i := 0; i < n; i++ {
		c := make(chan struct{})
		leaked = append(leaked, c)
		go leakyWorker(c)
	}
	leakMu.Unlock()
	fmt.Fprintf(w, "leaked %d\n", n)
}

// burnCPU spins for the given time: the CPU hot spot.
func burnCPU(d time.Duration) uint64 {
	var x uint64
	for end := time.Now().Add(d); time.Now().Before(end); {
		for i := 0; i < 1000; i++ {
			x += uint64(i) * 2654435761
		}
	}
	return x
}

func burn(w http.ResponseWriter, r *http.Request) {
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	fmt.Fprintf(w, "%d\n", burnCPU(time.Duration(ms)*time.Millisecond))
}

// The deep* functions call each other in an order the loop counter picks,
// so a CPU profile of /deep has many distinct stacks: a large profile.
func deepA(n int, x uint64) uint64 { return deepNext(n, x*31+1) }
func deepB(n int, x uint64) uint64 { return deepNext(n, x*37+2) }
func deepC(n int, x uint64) uint64 { return deepNext(n, x*41+3) }
func deepD(n int, x uint64) uint64 { return deepNext(n, x*43+4) }

func deepNext(n int, x uint64) uint64 {
	if n == 0 {
		for i := 0; i < 200; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		return x
	}
	// The branch comes from the bits of x, which the multiply-add
	// scrambles: paths through the four functions look random, so the
	// stacks rarely repeat.
	switch (x >> 33) % 4 {
	case 0:
		return deepA(n-1, x)
	case 1:
		return deepB(n-1, x)
	case 2:
		return deepC(n-1, x)
	default:
		return deepD(n-1, x)
	}
}

func deep(w http.ResponseWriter, r *http.Request) {
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	var x uint64
	for end := time.Now().Add(time.Duration(ms) * time.Millisecond); time.Now().Before(end); {
		x += deepNext(40, x*2862933555777941757+uint64(time.Now().UnixNano()))
	}
	fmt.Fprintf(w, "%d\n", x)
}

// profileHi is a CPU profile at 2 kHz instead of 100 Hz: a big profile for
// benchmarks. (SetCPUProfileRate before StartCPUProfile wins; Go prints a
// warning about it.)
func profileHi(w http.ResponseWriter, r *http.Request) {
	secs, _ := strconv.Atoi(r.URL.Query().Get("seconds"))
	runtime.SetCPUProfileRate(2000)
	if err := pprof.StartCPUProfile(w); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	time.Sleep(time.Duration(secs) * time.Second)
	pprof.StopCPUProfile()
}

func alloc(w http.ResponseWriter, r *http.Request) {
	mb, _ := strconv.Atoi(r.URL.Query().Get("mb"))
	for i := 0; i < mb; i++ {
		sink = append(sink, make([]byte, 1<<20))
	}
	fmt.Fprintf(w, "allocated %d MiB\n", mb)
}

func metrics(w http.ResponseWriter, r *http.Request) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# HELP go_goroutines Number of goroutines that currently exist.\n# TYPE go_goroutines gauge\ngo_goroutines %d\n", runtime.NumGoroutine())
	fmt.Fprintf(w, "# TYPE go_threads gauge\ngo_threads %d\n", runtime.GOMAXPROCS(0))
	fmt.Fprintf(w, "# TYPE go_memstats_alloc_bytes gauge\ngo_memstats_alloc_bytes %d\n", m.Alloc)
	fmt.Fprintf(w, "# TYPE go_memstats_heap_inuse_bytes gauge\ngo_memstats_heap_inuse_bytes %d\n", m.HeapInuse)
	fmt.Fprintf(w, "# TYPE go_memstats_mallocs_total counter\ngo_memstats_mallocs_total %d\n", m.Mallocs)
	fmt.Fprintf(w, "# TYPE go_gc_duration_seconds summary\ngo_gc_duration_seconds{quantile=\"1\"} %g\ngo_gc_duration_seconds_sum %g\ngo_gc_duration_seconds_count %d\n",
		float64(m.PauseNs[(m.NumGC+255)%256])/1e9, float64(m.PauseTotalNs)/1e9, m.NumGC)
	fmt.Fprintf(w, "# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\"} 42\n")
}

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "listen address")
	flag.Parse()
	http.HandleFunc("/leak", leak)
	http.HandleFunc("/burn", burn)
	http.HandleFunc("/alloc", alloc)
	http.HandleFunc("/deep", deep)
	http.HandleFunc("/profile-hi", profileHi)
	http.HandleFunc("/metrics", metrics)
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	// One line for the test harness: where to find us.
	fmt.Fprintf(os.Stdout, "testsvc listening on http://%s\n", l.Addr())
	log.Fatal(http.Serve(l, nil))
}

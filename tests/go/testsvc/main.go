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

// wide burns CPU through 64 functions chosen at random at every level, so
// that nearly every CPU sample has a stack of its own (up to the 64 frames
// a Go profile keeps): the makings of a CPU profile of more than 1 MB for
// the pprof benchmark.
func wide(w http.ResponseWriter, r *http.Request) {
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	var x uint64
	for end := time.Now().Add(time.Duration(ms) * time.Millisecond); time.Now().Before(end); {
		x += wideStep(80, x*2862933555777941757+uint64(time.Now().UnixNano()))
	}
	fmt.Fprintf(w, "%d\n", x)
}

var wides [64]func(int, uint64) uint64

func init() {
	wides = [64]func(int, uint64) uint64{w00, w01, w02, w03, w04, w05, w06, w07, w08, w09, w10, w11, w12, w13, w14, w15, w16, w17, w18, w19, w20, w21, w22, w23, w24, w25, w26, w27, w28, w29, w30, w31, w32, w33, w34, w35, w36, w37, w38, w39, w40, w41, w42, w43, w44, w45, w46, w47, w48, w49, w50, w51, w52, w53, w54, w55, w56, w57, w58, w59, w60, w61, w62, w63}
}

// wideStep starts a walk through the 64 functions: each calls the next
// one, chosen by the bits of x, which the multiply-add scrambles, until
// the bottom, which spins.
func wideStep(n int, x uint64) uint64 {
	return wides[(x>>33)%64](n, x)
}

func spin(x uint64) uint64 {
	for i := 0; i < 200; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	return x
}

func w00(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*3 + 0
	return wides[(x>>33)%64](n-1, x)
}

func w01(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*5 + 1
	return wides[(x>>33)%64](n-1, x)
}

func w02(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*7 + 2
	return wides[(x>>33)%64](n-1, x)
}

func w03(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*9 + 3
	return wides[(x>>33)%64](n-1, x)
}

func w04(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*11 + 4
	return wides[(x>>33)%64](n-1, x)
}

func w05(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*13 + 5
	return wides[(x>>33)%64](n-1, x)
}

func w06(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*15 + 6
	return wides[(x>>33)%64](n-1, x)
}

func w07(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*17 + 7
	return wides[(x>>33)%64](n-1, x)
}

func w08(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*19 + 8
	return wides[(x>>33)%64](n-1, x)
}

func w09(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*21 + 9
	return wides[(x>>33)%64](n-1, x)
}

func w10(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*23 + 10
	return wides[(x>>33)%64](n-1, x)
}

func w11(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*25 + 11
	return wides[(x>>33)%64](n-1, x)
}

func w12(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*27 + 12
	return wides[(x>>33)%64](n-1, x)
}

func w13(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*29 + 13
	return wides[(x>>33)%64](n-1, x)
}

func w14(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*31 + 14
	return wides[(x>>33)%64](n-1, x)
}

func w15(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*33 + 15
	return wides[(x>>33)%64](n-1, x)
}

func w16(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*35 + 16
	return wides[(x>>33)%64](n-1, x)
}

func w17(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*37 + 17
	return wides[(x>>33)%64](n-1, x)
}

func w18(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*39 + 18
	return wides[(x>>33)%64](n-1, x)
}

func w19(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*41 + 19
	return wides[(x>>33)%64](n-1, x)
}

func w20(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*43 + 20
	return wides[(x>>33)%64](n-1, x)
}

func w21(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*45 + 21
	return wides[(x>>33)%64](n-1, x)
}

func w22(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*47 + 22
	return wides[(x>>33)%64](n-1, x)
}

func w23(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*49 + 23
	return wides[(x>>33)%64](n-1, x)
}

func w24(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*51 + 24
	return wides[(x>>33)%64](n-1, x)
}

func w25(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*53 + 25
	return wides[(x>>33)%64](n-1, x)
}

func w26(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*55 + 26
	return wides[(x>>33)%64](n-1, x)
}

func w27(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*57 + 27
	return wides[(x>>33)%64](n-1, x)
}

func w28(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*59 + 28
	return wides[(x>>33)%64](n-1, x)
}

func w29(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*61 + 29
	return wides[(x>>33)%64](n-1, x)
}

func w30(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*63 + 30
	return wides[(x>>33)%64](n-1, x)
}

func w31(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*65 + 31
	return wides[(x>>33)%64](n-1, x)
}

func w32(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*67 + 32
	return wides[(x>>33)%64](n-1, x)
}

func w33(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*69 + 33
	return wides[(x>>33)%64](n-1, x)
}

func w34(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*71 + 34
	return wides[(x>>33)%64](n-1, x)
}

func w35(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*73 + 35
	return wides[(x>>33)%64](n-1, x)
}

func w36(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*75 + 36
	return wides[(x>>33)%64](n-1, x)
}

func w37(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*77 + 37
	return wides[(x>>33)%64](n-1, x)
}

func w38(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*79 + 38
	return wides[(x>>33)%64](n-1, x)
}

func w39(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*81 + 39
	return wides[(x>>33)%64](n-1, x)
}

func w40(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*83 + 40
	return wides[(x>>33)%64](n-1, x)
}

func w41(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*85 + 41
	return wides[(x>>33)%64](n-1, x)
}

func w42(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*87 + 42
	return wides[(x>>33)%64](n-1, x)
}

func w43(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*89 + 43
	return wides[(x>>33)%64](n-1, x)
}

func w44(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*91 + 44
	return wides[(x>>33)%64](n-1, x)
}

func w45(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*93 + 45
	return wides[(x>>33)%64](n-1, x)
}

func w46(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*95 + 46
	return wides[(x>>33)%64](n-1, x)
}

func w47(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*97 + 47
	return wides[(x>>33)%64](n-1, x)
}

func w48(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*99 + 48
	return wides[(x>>33)%64](n-1, x)
}

func w49(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*101 + 49
	return wides[(x>>33)%64](n-1, x)
}

func w50(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*103 + 50
	return wides[(x>>33)%64](n-1, x)
}

func w51(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*105 + 51
	return wides[(x>>33)%64](n-1, x)
}

func w52(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*107 + 52
	return wides[(x>>33)%64](n-1, x)
}

func w53(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*109 + 53
	return wides[(x>>33)%64](n-1, x)
}

func w54(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*111 + 54
	return wides[(x>>33)%64](n-1, x)
}

func w55(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*113 + 55
	return wides[(x>>33)%64](n-1, x)
}

func w56(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*115 + 56
	return wides[(x>>33)%64](n-1, x)
}

func w57(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*117 + 57
	return wides[(x>>33)%64](n-1, x)
}

func w58(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*119 + 58
	return wides[(x>>33)%64](n-1, x)
}

func w59(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*121 + 59
	return wides[(x>>33)%64](n-1, x)
}

func w60(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*123 + 60
	return wides[(x>>33)%64](n-1, x)
}

func w61(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*125 + 61
	return wides[(x>>33)%64](n-1, x)
}

func w62(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*127 + 62
	return wides[(x>>33)%64](n-1, x)
}

func w63(n int, x uint64) uint64 {
	if n == 0 {
		return spin(x)
	}
	x = x*129 + 63
	return wides[(x>>33)%64](n-1, x)
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
	// A heap profile shows the heap as of the last finished GC: without
	// one here, part of what was just allocated may not be in it yet.
	runtime.GC()
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
	http.HandleFunc("/wide", wide)
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

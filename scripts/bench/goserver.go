// An HTTP server in Go for scripts/bench.mjs (group "apps"): GET / answers "hello" and the
// pid. It listens on a port the kernel picks on 127.0.0.1 and prints "listening PORT" when it
// accepts. Built by the bench with `go build` into its temporary directory, where go is installed.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %d\n", os.Getpid())
	})
	fmt.Printf("listening %d\n", ln.Addr().(*net.TCPAddr).Port)
	os.Stdout.Sync()
	if err := http.Serve(ln, nil); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
}

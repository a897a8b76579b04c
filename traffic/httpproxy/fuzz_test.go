package httpproxy

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzRequest sends arbitrary bytes to the front door as a request: it
// answers with a well-formed HTTP response (or closes the connection),
// never hangs past its read timeout, never proxies a request for a host it
// does not route, and keeps serving everyone else.
func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: www.shop.example\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n",
		"POST /api/x HTTP/1.1\r\nHost: www.shop.example\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: www.shop.example\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
		"POST / HTTP/1.1\r\nHost: www.shop.example\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: www.shop.example\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
		"GET http://evil.example/ HTTP/1.1\r\nHost: www.shop.example\r\n\r\n",
		"\x00\x01\x02\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: www.shop.example\r\n\r\n",
		"GET / HTTP/9.9\r\nHost: www.shop.example\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	e := setup(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		conn, err := net.Dial("tcp", e.proxy.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(15 * time.Second))
		conn.Write(raw)
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 && !strings.Contains(strings.ToLower(string(raw)), "shop.example") {
				t.Errorf("answered 200 to a request naming no routed host: %q", raw)
			}
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("no answer and no close within 15s to %q", raw)
		}
		if code, _ := e.do(t, "GET", "/", "www.shop.example", ""); code != 200 {
			t.Fatalf("after %q, a good request got %d", raw, code)
		}
	})
}

package pki

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// BenchmarkHandshake is one new connection on loopback with a full TLS 1.3
// handshake: mutual (ServerConfig, ClientConfig: both chains verified, the
// SPIFFE IDs checked) against server authentication only, with the same
// certificates, in the same run.
func BenchmarkHandshake(b *testing.B) {
	clk := newClock(time.Now())
	c := newCA(b, clk, "policy", "runner")
	policy, err := NewSource(c.certs+"/policy", SourceOptions{})
	if err != nil {
		b.Fatal(err)
	}
	runner, err := NewSource(c.certs+"/runner", SourceOptions{})
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.rootPair(b).cert)
	serverOnly := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: policy.cur.Load().certs, SessionTicketsDisabled: true}
	clientOnly := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "policy"}
	for _, bm := range []struct {
		name           string
		server, client *tls.Config
	}{
		{"mutual", policy.ServerConfig(), runner.ClientConfig("policy")},
		{"server-only", serverOnly, clientOnly},
	} {
		b.Run(bm.name, func(b *testing.B) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			go func() {
				for {
					conn, err := l.Accept()
					if err != nil {
						return
					}
					tc := tls.Server(conn, bm.server)
					if tc.Handshake() == nil {
						tc.Write([]byte{1})
					}
					tc.Close()
				}
			}()
			one := make([]byte, 1)
			for b.Loop() {
				conn, err := net.Dial("tcp", l.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				tc := tls.Client(conn, bm.client)
				if _, err := io.ReadFull(tc, one); err != nil {
					b.Fatal(err)
				}
				tc.Close()
			}
		})
	}
}

// BenchmarkRequest is one small HTTP/2 request on an open connection:
// over mutual TLS (Server, Transport) against cleartext HTTP/2, in the
// same run.
func BenchmarkRequest(b *testing.B) {
	c := newCA(b, newClock(time.Now()), "policy", "runner")
	policy, err := NewSource(c.certs+"/policy", SourceOptions{})
	if err != nil {
		b.Fatal(err)
	}
	runner, err := NewSource(c.certs+"/runner", SourceOptions{})
	if err != nil {
		b.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })

	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	plainTr := &http.Transport{Protocols: &h2c}

	var h1 http.Protocols
	h1.SetHTTP1(true)
	h1Tr := runner.Transport("policy")
	h1Tr.Protocols = &h1
	h1Tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	for _, bm := range []struct {
		name   string
		srv    func() *http.Server
		tr     *http.Transport
		scheme string
	}{
		{"mtls", func() *http.Server { return policy.Server(h) }, runner.Transport("policy"), "https"},
		{"mtls-http1", func() *http.Server { return policy.Server(h) }, h1Tr, "https"},
		{"h2c", func() *http.Server { return &http.Server{Handler: h, Protocols: &h2c} }, plainTr, "http"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			srv := bm.srv()
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			if bm.scheme == "https" {
				go srv.ServeTLS(l, "", "")
			} else {
				go srv.Serve(l)
			}
			defer srv.Close()
			defer bm.tr.CloseIdleConnections()
			client := &http.Client{Transport: bm.tr}
			url := bm.scheme + "://" + l.Addr().String() + "/"
			for b.Loop() {
				resp, err := client.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if want := bm.tr.Protocols.HTTP2() || bm.tr.Protocols.UnencryptedHTTP2(); (resp.ProtoMajor == 2) != want {
					b.Fatalf("%s", resp.Proto)
				}
			}
		})
	}
}

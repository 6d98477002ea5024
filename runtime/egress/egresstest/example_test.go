package egresstest_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/egress/egresstest"
)

// A sandbox test routes the contract's host to a local server.
func Example() {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s, key %s", r.Host, r.Header.Get("X-Key"))
	}))
	defer srv.Close()

	dialer, roots := egresstest.New(map[string]*httptest.Server{"api.example.com": srv})
	s, err := egress.NewSession(egress.Config{
		Rules: []egress.Rule{{
			Scheme: "https", Host: "api.example.com",
			Secrets: []egress.SecretSpec{{Name: "key", Header: "X-Key"}},
		}},
		Secrets: staticSecret("k-123"),
		Dialer:  dialer,
		RootCAs: roots,
	})
	if err != nil {
		panic(err)
	}
	defer s.Close()
	resp, err := s.Do(context.Background(), egress.Request{URL: "https://api.example.com/hi"})
	if err != nil {
		panic(err)
	}
	fmt.Println(resp.Status, string(resp.Body))
	fmt.Printf("%+v\n", s.Records()[0])
	fmt.Printf("%q %v\n", s.Released(), dialer.Dialed())
	// Output:
	// 200 hello from api.example.com, key k-123
	// {Method:GET URL:https://api.example.com/hi Status:200 Bytes:37 Allowed:true Rule:0 Reason: Redirect:0}
	// ["k-123"] [api.example.com:443]
}

type staticSecret string

func (s staticSecret) Secret(context.Context, string, egress.Audience) ([]byte, error) {
	return []byte(s), nil
}

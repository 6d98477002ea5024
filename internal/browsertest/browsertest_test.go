package browsertest

import (
	"image/png"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

const csp = "default-src 'none'; script-src 'self'"

const formPage = `<!doctype html>
<html><head><title>greeter</title></head><body>
<form id="f"><input id="name" name="name" placeholder="name"> <button id="go" type="button">Greet</button></form>
<p id="out">waiting</p>
<script src="/app.js"></script>
</body></html>`

const appJS = `document.getElementById('go').addEventListener('click', function () {
  document.getElementById('out').textContent = 'Hello, ' + document.getElementById('name').value + '!';
});`

const inlinePage = `<!doctype html>
<html><head><title>inline</title></head><body>
<p id="out">not run</p>
<script>document.getElementById('out').textContent = 'ran';</script>
</body></html>`

const throwsPage = `<!doctype html>
<html><head><title>throws</title></head><body><script src="/throws.js"></script></body></html>`

const throwsJS = `console.error('bad thing', 42); throw new Error('kaboom');`

// server serves the test pages, all under the strict CSP.
func server(t *testing.T) *httptest.Server {
	t.Helper()
	file := func(ctype, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Security-Policy", csp)
			w.Header().Set("Content-Type", ctype)
			w.Write([]byte(body))
		}
	}
	const html, js = "text/html; charset=utf-8", "text/javascript"
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", file(html, formPage))
	mux.Handle("GET /app.js", file(js, appJS))
	mux.Handle("GET /inline", file(html, inlinePage))
	mux.Handle("GET /throws", file(html, throwsPage))
	mux.Handle("GET /throws.js", file(js, throwsJS))
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "alice", Path: "/"})
		file(html, `<p id="out">logged in</p>`)(w, r)
	})
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		who := "nobody"
		if c, err := r.Cookie("session"); err == nil {
			who = c.Value
		}
		file(html, `<p id="out">`+who+`</p>`)(w, r)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestStrictCSPPage(t *testing.T) {
	srv := server(t)
	b := New(t)

	b.Run(
		chromedp.Navigate(srv.URL+"/"),
		chromedp.SendKeys(chromedp.CSS("#name"), "Ada"),
		chromedp.Click(chromedp.CSS("#go")),
		Step(chromedp.Poll[bool](`document.getElementById('out').textContent === 'Hello, Ada!'`)),
	)
	if got, want := b.Text("#out"), "Hello, Ada!"; got != want {
		t.Errorf("Text(#out) = %q, want %q", got, want)
	}
	if got, want := b.URL(), srv.URL+"/"; got != want {
		t.Errorf("URL() = %q, want %q", got, want)
	}

	path := b.Screenshot("greeted")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	if r := img.Bounds(); r.Dx() < 100 || r.Dy() < 100 {
		t.Errorf("screenshot %s is only %v", path, r)
	}

	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("ConsoleErrors() = %q, want none", errs)
	}
}

func TestConsoleErrorsSeesCSPViolation(t *testing.T) {
	srv := server(t)
	b := New(t)

	b.Run(chromedp.Navigate(srv.URL + "/inline"))
	if got := b.Text("#out"); got != "not run" {
		t.Errorf("inline script ran despite the CSP: #out = %q", got)
	}
	errs := b.ConsoleErrors()
	if len(errs) == 0 || !strings.Contains(strings.Join(errs, "\n"), "Content Security Policy") {
		t.Errorf("ConsoleErrors() = %q, want a Content Security Policy violation", errs)
	}
}

func TestConsoleErrorsSeesExceptionAndConsoleError(t *testing.T) {
	srv := server(t)
	b := New(t)

	b.Run(chromedp.Navigate(srv.URL + "/throws"))
	got := strings.Join(b.ConsoleErrors(), "\n")
	for _, want := range []string{"console.error: bad thing 42", "Uncaught Error: kaboom"} {
		if !strings.Contains(got, want) {
			t.Errorf("ConsoleErrors() = %q, want it to contain %q", got, want)
		}
	}
}

func TestTwoBrowsersHaveSeparateCookies(t *testing.T) {
	srv := server(t)
	alice, bob := New(t), New(t)

	alice.Run(chromedp.Navigate(srv.URL + "/login"))
	alice.Run(chromedp.Navigate(srv.URL + "/whoami"))
	bob.Run(chromedp.Navigate(srv.URL + "/whoami"))
	if got := alice.Text("#out"); got != "alice" {
		t.Errorf("alice sees %q, want alice", got)
	}
	if got := bob.Text("#out"); got != "nobody" {
		t.Errorf("bob sees %q, want nobody: the cookie leaked between browsers", got)
	}
}

func TestFind(t *testing.T) {
	// onPath is a lookPath that finds exactly the given names.
	onPath := func(found ...string) func(string) (string, error) {
		return func(name string) (string, error) {
			for _, f := range found {
				if name == f {
					if strings.HasPrefix(name, "/") {
						return name, nil
					}
					return "/usr/bin/" + name, nil
				}
			}
			return "", fs.ErrNotExist
		}
	}
	env := func(kv ...string) func(string) string {
		return func(key string) string {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == key {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	tests := []struct {
		name      string
		lookPath  func(string) (string, error)
		getenv    func(string) string
		wantPath  string
		wantFatal bool
		wantMsg   string // substring; "" means no message
	}{
		{"chromium on PATH", onPath("chromium"), env(), "/usr/bin/chromium", false, ""},
		{"chromium-browser on PATH", onPath("chromium-browser"), env(), "/usr/bin/chromium-browser", false, ""},
		{"google-chrome on PATH", onPath("google-chrome"), env(), "/usr/bin/google-chrome", false, ""},
		{"chromium preferred", onPath("google-chrome", "chromium"), env(), "/usr/bin/chromium", false, ""},
		{"found in CI", onPath("chromium"), env("CI", "true"), "/usr/bin/chromium", false, ""},
		{"env var wins", onPath("chromium", "/opt/chrome"), env(EnvChromium, "/opt/chrome"), "/opt/chrome", false, ""},
		{"missing skips", onPath(), env(), "", false, "apt-get install chromium chromium-driver"},
		{"missing with CI=false skips", onPath(), env("CI", "false"), "", false, "apt-get install chromium chromium-driver"},
		{"missing in CI is fatal", onPath(), env("CI", "true"), "", true, "CI=true"},
		{"missing in CI=1 is fatal", onPath(), env("CI", "1"), "", true, "CI=true"},
		{"bad env var is fatal", onPath("chromium"), env(EnvChromium, "/nonexistent"), "", true, "/nonexistent"},
		{"bad env var in CI is fatal", onPath("chromium"), env(EnvChromium, "/nonexistent", "CI", "true"), "", true, "/nonexistent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, msg, fatal := find(tt.lookPath, tt.getenv)
			if path != tt.wantPath || fatal != tt.wantFatal {
				t.Errorf("find() = %q, %q, %v; want path %q, fatal %v", path, msg, fatal, tt.wantPath, tt.wantFatal)
			}
			if (tt.wantMsg == "") != (msg == "") || !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("find() message = %q, want one containing %q", msg, tt.wantMsg)
			}
		})
	}
}

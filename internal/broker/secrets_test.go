package broker

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/internal/secret"
)

func TestPutListDeleteVersions(t *testing.T) {
	e := newEnv(t)
	if m := e.put("API_KEY", "one"); m.GetVersion() != 1 || m.GetName() != "API_KEY" {
		t.Fatalf("first put: %v", m)
	}
	if m := e.put("API_KEY", "two"); m.GetVersion() != 2 {
		t.Fatalf("second put: version %d, want 2", m.GetVersion())
	}
	e.put("OTHER", "x")
	list, err := e.svc.ListSecrets(ownerCtx(), &contractualv1.ListSecretsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range list.GetSecrets() {
		got = append(got, m.GetName())
		if m.GetCreatedAt() == nil || m.GetUpdatedAt() == nil || m.GetLastUsedAt() != nil {
			t.Errorf("metadata %v: want created and updated, no last use", m)
		}
	}
	if want := []string{"API_KEY", "OTHER"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("list = %v, want %v", got, want)
	}
	if list.GetSecrets()[0].GetVersion() != 2 {
		t.Fatalf("API_KEY version %d, want 2", list.GetSecrets()[0].GetVersion())
	}
	if _, err := e.svc.DeleteSecret(ownerCtx(), &contractualv1.DeleteSecretRequest{Name: "API_KEY"}); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.DeleteSecret(ownerCtx(), &contractualv1.DeleteSecretRequest{Name: "API_KEY"})
	wantKind(t, err, errs.NotFound)
	var n int
	if err := e.svc.db.QueryRow(`SELECT COUNT(*) FROM secrets WHERE name = 'API_KEY'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows left after delete: %d, %v", n, err)
	}
	want := []string{actionPut, actionPut, actionPut, actionDelete}
	if got := e.audit.actions(); !reflect.DeepEqual(got, want) {
		t.Fatalf("audit actions %v, want %v", got, want)
	}
	for _, ev := range e.audit.all() {
		if ev.GetPrincipal() != ownerDevice || ev.GetService() != "broker" || ev.GetOutcome() != outcomeOK {
			t.Errorf("event %v", ev)
		}
	}
}

func TestPutRefusals(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name  string
		ctx   context.Context
		sname string
		value []byte
		kind  errs.Kind
	}{
		{"no principal", context.Background(), "API_KEY", []byte("v"), errs.Unauthenticated},
		{"session", principal.With(context.Background(), "session:x"), "API_KEY", []byte("v"), errs.PermissionDenied},
		{"runner", runnerCtx(), "API_KEY", []byte("v"), errs.PermissionDenied},
		{"lowercase name", ownerCtx(), "api_key", []byte("v"), errs.Invalid},
		{"long name", ownerCtx(), "A" + strings.Repeat("B", 64), []byte("v"), errs.Invalid},
		{"empty value", ownerCtx(), "API_KEY", nil, errs.Invalid},
		{"huge value", ownerCtx(), "API_KEY", bytes.Repeat([]byte("a"), secret.MaxValueBytes+1), errs.Invalid},
		{"newline", ownerCtx(), "API_KEY", []byte(secretValue + "\n"), errs.Invalid},
		{"CR", ownerCtx(), "API_KEY", []byte("a\rb"), errs.Invalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.svc.PutSecret(c.ctx, &contractualv1.PutSecretRequest{Name: c.sname, Value: c.value})
			wantKind(t, err, c.kind)
			if strings.Contains(err.Error(), secretValue) {
				t.Fatalf("error quotes the value: %v", err)
			}
		})
	}
	if _, err := e.svc.PutSecret(principal.With(context.Background(), "device:phone"), &contractualv1.PutSecretRequest{Name: "API_KEY", Value: []byte("v")}); err != nil {
		t.Fatalf("a device may put: %v", err)
	}
	for _, ctx := range []context.Context{context.Background(), runnerCtx()} {
		if _, err := e.svc.ListSecrets(ctx, &contractualv1.ListSecretsRequest{}); err == nil {
			t.Error("list without the owner succeeded")
		}
		if _, err := e.svc.DeleteSecret(ctx, &contractualv1.DeleteSecretRequest{Name: "API_KEY"}); err == nil {
			t.Error("delete without the owner succeeded")
		}
		if _, err := e.svc.RotateKey(ctx, &contractualv1.RotateKeyRequest{}); err == nil {
			t.Error("rotate without the owner succeeded")
		}
	}
}

func TestPutAuditOutageStoresNothing(t *testing.T) {
	e := newEnv(t)
	e.audit.setFailing(true)
	_, err := e.svc.PutSecret(ownerCtx(), &contractualv1.PutSecretRequest{Name: "API_KEY", Value: []byte("v")})
	wantKind(t, err, errs.Unavailable)
	var n int
	if err := e.svc.db.QueryRow(`SELECT COUNT(*) FROM secrets`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows after a failed audit: %d, %v", n, err)
	}
}

// TestWriteOnly checks that no method but RedeemHandle has a response
// that can carry a value: no bytes field anywhere in their responses.
func TestWriteOnly(t *testing.T) {
	for _, resp := range []any{
		&contractualv1.PutSecretResponse{}, &contractualv1.ListSecretsResponse{},
		&contractualv1.DeleteSecretResponse{}, &contractualv1.RotateKeyResponse{},
		&contractualv1.IssueHandleResponse{},
	} {
		if hasBytes(reflect.TypeOf(resp), map[reflect.Type]bool{}) {
			t.Errorf("%T can carry bytes", resp)
		}
	}
	if !hasBytes(reflect.TypeOf(&contractualv1.RedeemHandleResponse{}), map[reflect.Type]bool{}) {
		t.Fatal("the check is broken: RedeemHandleResponse carries bytes")
	}
}

// hasBytes reports whether t has an exported []byte field, recursively.
func hasBytes(t reflect.Type, seen map[reflect.Type]bool) bool {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		if t == reflect.TypeOf([]byte(nil)) {
			return true
		}
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] {
		return false
	}
	seen[t] = true
	for i := range t.NumField() {
		if f := t.Field(i); f.IsExported() && hasBytes(f.Type, seen) {
			return true
		}
	}
	return false
}

func TestCiphertextSwapFails(t *testing.T) {
	e := newEnv(t)
	e.put("API_KEY", secretValue)
	e.put("OTHER", "other-value")
	_, err := e.svc.db.Exec(`UPDATE secrets SET ciphertext = CASE name
		WHEN 'API_KEY' THEN (SELECT ciphertext FROM secrets WHERE name = 'OTHER')
		ELSE (SELECT ciphertext FROM secrets WHERE name = 'API_KEY') END`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.redeem(e.issue())
	wantKind(t, err, errs.Internal)
	if !strings.Contains(err.Error(), "does not decrypt") {
		t.Fatalf("unclear error: %v", err)
	}
	// A version moved within one name fails too.
	e.put("API_KEY", "second")
	if _, err := e.svc.db.Exec(`UPDATE secrets SET ciphertext = (SELECT ciphertext FROM secrets WHERE name = 'OTHER' AND version = 1) WHERE name = 'API_KEY' AND version = 2`); err != nil {
		t.Fatal(err)
	}
	_, err = e.redeem(e.issue())
	wantKind(t, err, errs.Internal)
}

func TestOpenFailsClosed(t *testing.T) {
	e := newEnv(t)
	e.put("API_KEY", secretValue)
	e.svc.Close(context.Background())
	dir := t.TempDir()
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	other := filepath.Join(dir, "other")
	if err := GenerateKEK(other); err != nil {
		t.Fatal(err)
	}
	unreadable := write("unreadable", bytes.Repeat([]byte("k"), 32), 0o000)
	cases := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope"), "does not exist"},
		{"empty path", "", "no key-encryption key file"},
		{"directory", dir, "cannot read"},
		{"short", write("short", bytes.Repeat([]byte("k"), 31), 0o600), "neither"},
		{"base64 of 16", write("b16", []byte(base64.StdEncoding.EncodeToString(make([]byte, 16))), 0o600), "not 32"},
		{"wrong key", other, "does not decrypt the stored data keyset"},
	}
	if os.Geteuid() != 0 { // root reads any file
		cases = append(cases, struct{ name, path, want string }{"unreadable", unreadable, "cannot read"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Open(context.Background(), Config{Dir: e.dir, KEKFile: c.path}, Deps{Policy: e.policy, Audit: e.audit})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Open = %v, want an error containing %q", err, c.want)
			}
			wantKind(t, err, errs.FailedPrecondition)
		})
	}
	// The raw form of the right key works too.
	b, err := os.ReadFile(e.kek)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := Open(context.Background(), Config{Dir: e.dir, KEKFile: write("raw", raw, 0o600)}, Deps{Policy: e.policy, Audit: e.audit})
	if err != nil {
		t.Fatalf("raw KEK: %v", err)
	}
	svc.Close(context.Background())
}

func TestGenerateKEK(t *testing.T) {
	p := filepath.Join(t.TempDir(), "kek")
	if err := GenerateKEK(p); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	if err := GenerateKEK(p); err == nil {
		t.Fatal("GenerateKEK overwrote an existing key")
	}
	if _, err := readKEK(p); err != nil {
		t.Fatal(err)
	}
}

func TestStoreFileMode(t *testing.T) {
	e := newEnv(t)
	fi, err := os.Stat(filepath.Join(e.dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("broker.db mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestRotateKey(t *testing.T) {
	e := newEnv(t)
	e.put("API_KEY", "old-version")
	e.put("API_KEY", secretValue)
	e.put("OTHER", "other-value")
	before := e.svc.data.keyIDs()
	resp, err := e.svc.RotateKey(ownerCtx(), &contractualv1.RotateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetReencrypted() != 3 || resp.GetRetired() != uint32(len(before)) {
		t.Fatalf("rotate: %v (keys before %v)", resp, before)
	}
	after := e.svc.data.keyIDs()
	if !reflect.DeepEqual(after, []uint32{resp.GetPrimaryKeyId()}) {
		t.Fatalf("keys after rotation %v, want only %d", after, resp.GetPrimaryKeyId())
	}
	e.assertAllUnder(resp.GetPrimaryKeyId())
	// Every version still decrypts, also after a restart.
	e.svc.Close(context.Background())
	e.svc = e.open()
	e.assertAllUnder(resp.GetPrimaryKeyId())
	got, err := e.redeem(e.issue())
	if err != nil {
		t.Fatal(err)
	}
	if string(got.GetValue()) != secretValue || got.GetVersion() != 2 {
		t.Fatalf("after rotation: version %d, value mismatch %v", got.GetVersion(), string(got.GetValue()) != secretValue)
	}
	if acts := e.audit.actions(); !contains(acts, actionRotate) {
		t.Fatalf("no %s in %v", actionRotate, acts)
	}
	// A second rotation works on the rotated store.
	if _, err := e.svc.RotateKey(ownerCtx(), &contractualv1.RotateKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.redeem(e.issue()); err != nil {
		t.Fatal(err)
	}
}

func TestRotateKeyAuditOutageChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.put("API_KEY", secretValue)
	before := e.svc.data.keyIDs()
	e.audit.setFailing(true)
	_, err := e.svc.RotateKey(ownerCtx(), &contractualv1.RotateKeyRequest{})
	wantKind(t, err, errs.Unavailable)
	e.audit.setFailing(false)
	e.assertAllUnder(before[0])
	e.svc.Close(context.Background())
	e.svc = e.open()
	if _, err := e.redeem(e.issue()); err != nil {
		t.Fatal(err)
	}
}

// assertAllUnder checks that every stored ciphertext carries Tink's prefix
// for key id and decrypts.
func (e *env) assertAllUnder(id uint32) {
	e.t.Helper()
	rows, err := e.svc.db.Query(`SELECT name, version, ciphertext FROM secrets`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			name    string
			version uint32
			ct      []byte
		)
		if err := rows.Scan(&name, &version, &ct); err != nil {
			e.t.Fatal(err)
		}
		want := []byte{1, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
		if !bytes.HasPrefix(ct, want) {
			e.t.Errorf("%s v%d: ciphertext prefix %x, want key %d", name, version, ct[:5], id)
		}
		if _, err := e.svc.data.open(name, version, ct); err != nil {
			e.t.Errorf("%s v%d: %v", name, version, err)
		}
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func TestNoPlaintextOnDisk(t *testing.T) {
	e := newEnv(t)
	e.put("API_KEY", secretValue)
	e.put("API_KEY", secretValue+"2")
	if _, err := e.redeem(e.issue()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RotateKey(ownerCtx(), &contractualv1.RotateKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	e.checkNoPlaintext()
	e.svc.Close(context.Background())
	e.checkNoPlaintext()
	e.svc = e.open()
}

// checkNoPlaintext searches every file of the store, WAL included, for
// the value, raw and base64.
func (e *env) checkNoPlaintext() {
	e.t.Helper()
	files, err := filepath.Glob(filepath.Join(e.dir, "*"))
	if err != nil {
		e.t.Fatal(err)
	}
	needles := [][]byte{[]byte(secretValue), []byte(base64.StdEncoding.EncodeToString([]byte(secretValue))[:20])}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, n := range needles {
			if bytes.Contains(b, n) {
				e.t.Errorf("%s holds the secret value in plaintext", filepath.Base(f))
			}
		}
	}
}

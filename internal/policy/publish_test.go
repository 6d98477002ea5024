package policy

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/runtime/modcheck"
)

// TestPublishRefused publishes what must be refused, each with its error
// kind and a message that says what is wrong, and checks that the store
// did not change and that the refusal was audited.
func TestPublishRefused(t *testing.T) {
	f := newFixture(t)
	count := hostile(t, "count")
	textkitWasm, textkitCt := textkit(t)
	f.publish(count, counter(count, "1.0.0", "low", "")) // something in the store
	sneaky, badimport := hostile(t, "sneaky_http"), hostile(t, "badimport")
	sneakyCt := bytes.ReplaceAll(counter(sneaky, "1.0.0", "low", ""), []byte("count_vowels"), []byte("run"))
	badCt := bytes.ReplaceAll(counter(badimport, "1.0.0", "low", ""), []byte("count_vowels"), []byte("run"))
	notWasm := []byte("this is not wasm")
	huge := make([]byte, modcheck.MaxModuleBytes+1)

	tests := []struct {
		name     string
		ctx      context.Context
		wasm, ct []byte
		filename string
		kind     errs.Kind
		msgs     []string
	}{
		{"contract syntax", asOwner, count, []byte("name: [counter\n"), "counter.yaml", errs.Invalid, []string{"counter.yaml:"}},
		{"contract rules", asOwner, count, bytes.Replace(counter(count, "1.0.0", "low", ""), []byte("name: counter"), []byte("name: Counter!"), 1),
			"c.yaml", errs.Invalid, []string{"c.yaml:2:7", "name"}},
		{"digest mismatch", asOwner, textkitWasm, counter(count, "1.0.0", "low", ""), "c.yaml", errs.Invalid,
			[]string{"digest mismatch: contract names " + contract.ModuleDigest(count) + ", module is " + contract.ModuleDigest(textkitWasm)}},
		{"http import not granted", asOwner, sneaky, sneakyCt, "c.yaml", errs.PermissionDenied,
			[]string{"extism:host/env.http_request", "the contract grants no http egress"}},
		{"namespace never granted", asOwner, badimport, badCt, "c.yaml", errs.PermissionDenied, []string{"env.system"}},
		{"wasi not granted", asOwner, textkitWasm, bytes.Replace(textkitCt, []byte("  wasi: {clock: true, random: true}"), []byte("  {}"), 1),
			"contract.yaml", errs.PermissionDenied, []string{"wasi_snapshot_preview1."}},
		{"tool not exported", asOwner, count, bytes.ReplaceAll(counter(count, "1.0.0", "low", ""), []byte("count_vowels"), []byte("count_consonants")),
			"c.yaml", errs.Invalid, []string{`tools the module does not export as functions: "count_consonants"`}},
		{"not wasm", asOwner, notWasm, bytes.Replace(counter(count, "1.0.0", "low", ""), []byte(contract.ModuleDigest(count)), []byte(contract.ModuleDigest(notWasm)), 1),
			"c.yaml", errs.Invalid, []string{"reading the module's imports"}},
		{"no module", asOwner, nil, counter(count, "1.0.0", "low", ""), "c.yaml", errs.Invalid, []string{"module is required"}},
		{"no contract", asOwner, count, nil, "c.yaml", errs.Invalid, []string{"contract is required"}},
		{"module too large", asOwner, huge, counter(huge, "1.0.0", "low", ""), "c.yaml", errs.Invalid, []string{"module is 67108865 bytes, over the 67108864 byte limit"}},
		{"contract too large", asOwner, count, append(counter(count, "1.0.0", "low", ""), bytes.Repeat([]byte("#"), contract.MaxFileSize)...),
			"c.yaml", errs.Invalid, []string{"c.yaml: contract is", "over the 1048576 byte limit"}},
		{"no principal", context.Background(), count, counter(count, "2.0.0", "low", ""), "c.yaml", errs.Unauthenticated, []string{"no principal"}},
		{"a session", principal.With(context.Background(), "session:s1"), count, counter(count, "2.0.0", "low", ""), "c.yaml", errs.PermissionDenied, []string{"session:s1 may not"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, n := f.snapshot(), f.audit.len()
			_, err := f.s.Publish(tc.ctx, &contractualv1.PublishRequest{Module: tc.wasm, Contract: tc.ct, ContractFilename: tc.filename})
			wantErr(t, err, tc.kind, tc.msgs...)
			if after := f.snapshot(); after != before {
				t.Fatalf("a refused publish changed the store:\n%s\nvs\n%s", before, after)
			}
			onlyEvent(t, f.audit.since(n), actionPublish, tc.kind.String())
		})
	}
}

// TestPublishAgain checks that publishing the same contract again, in
// another spelling, changes nothing and says so; and that a module shared
// by two contracts is stored once.
func TestPublishAgain(t *testing.T) {
	f := newFixture(t)
	wasm := hostile(t, "count")
	first := f.publish(wasm, counter(wasm, "1.0.0", "low", ""))
	before := f.snapshot()
	json := []byte(`{"name": "counter", "version": "1.0.0", "module": "` + contract.ModuleDigest(wasm) + `",
		"publisher": "policy tests", "tools": [{"export": "count_vowels", "risk": "low",
		"description": "Count the ASCII vowels of a text.",
		"input_schema": {"type": "object", "required": ["text"], "additionalProperties": false,
			"properties": {"text": {"maxLength": 100, "type": "string"}}}}]}`)
	again, err := f.s.Publish(asOwner, &contractualv1.PublishRequest{Module: wasm, Contract: json, ContractFilename: "counter.json"})
	if err != nil {
		t.Fatal(err)
	}
	if !again.GetExisted() || again.GetRecord().GetDigest() != first.GetRecord().GetDigest() {
		t.Fatalf("republish: %v", again)
	}
	if after := f.snapshot(); after != before {
		t.Fatalf("republishing changed the store:\n%s\nvs\n%s", before, after)
	}
	f.publish(wasm, counter(wasm, "1.0.1", "low", ""))
	var modules int
	if err := f.s.db.QueryRow(`SELECT count(*) FROM modules`).Scan(&modules); err != nil || modules != 1 {
		t.Fatalf("%d modules stored, want 1 (%v)", modules, err)
	}
	mod, err := f.s.GetModule(context.Background(), &contractualv1.GetModuleRequest{Digest: contract.ModuleDigest(wasm)})
	if err != nil || !bytes.Equal(mod.GetModule(), wasm) {
		t.Fatalf("GetModule: %v", err)
	}
}

// TestGetErrors checks GetModule's and GetContract's errors.
func TestGetErrors(t *testing.T) {
	f := newFixture(t)
	unknown := "sha256:" + strings.Repeat("a", 64)
	_, err := f.s.GetModule(context.Background(), &contractualv1.GetModuleRequest{Digest: unknown})
	wantErr(t, err, errs.NotFound, "no module "+unknown)
	_, err = f.s.GetModule(context.Background(), &contractualv1.GetModuleRequest{Digest: "md5:x"})
	wantErr(t, err, errs.Invalid, "module digest", "malformed")
	_, err = f.s.GetContract(context.Background(), &contractualv1.GetContractRequest{Digest: unknown})
	wantErr(t, err, errs.NotFound, "no contract "+unknown)
	_, err = f.s.GetContract(context.Background(), &contractualv1.GetContractRequest{})
	wantErr(t, err, errs.Invalid, "contract digest is required")
	_, err = f.s.ListContracts(context.Background(), &contractualv1.ListContractsRequest{State: 9})
	wantErr(t, err, errs.Invalid, "state 9")
}

// TestStoreFile checks the store's file mode and durability settings.
func TestStoreFile(t *testing.T) {
	f := newFixture(t)
	fi, err := os.Stat(filepath.Join(f.dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", DBFile, m)
	}
	var mode string
	var sync int
	if err := f.s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q, %v", mode, err)
	}
	if err := f.s.db.QueryRow(`PRAGMA synchronous`).Scan(&sync); err != nil || sync != 2 {
		t.Fatalf("synchronous %d (want 2, FULL), %v", sync, err)
	}
}

package contract_test

import (
	"errors"
	"fmt"

	"github.com/contractual/contractual/contracts/contract"
)

const approved = `
module: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
name: weather
version: 1.0.0
publisher: alice@example.com
tools:
  - export: forecast
    description: Fetch the forecast for a city
    risk: low
    input_schema: {type: object, properties: {city: {type: string}}}
capabilities:
  http:
    - {scheme: https, host: api.open-meteo.com, path_prefix: /v1/, methods: [GET]}
`

const update = `
module: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
name: weather
version: 1.1.0
publisher: alice@example.com
tools:
  - export: forecast
    description: Fetch the forecast for a city
    risk: low
    input_schema: {type: object, properties: {city: {type: string}}}
capabilities:
  http:
    - {scheme: https, host: "*.open-meteo.com", path_prefix: /v1/, methods: [GET, POST]}
  log: {}
limits: {timeout_ms: 5000}
`

func ExampleDiff() {
	old, err := contract.Load([]byte(approved), "weather.yaml")
	if err != nil {
		panic(err)
	}
	new, err := contract.Load([]byte(update), "weather.yaml")
	if err != nil {
		panic(err)
	}
	fmt.Print(contract.FormatDiff(contract.Diff(old, new)))
	// Output:
	// ~ changed  version: "1.0.0" → "1.1.0"
	// + widened  capabilities.http[https://api.open-meteo.com/v1/].host: api.open-meteo.com → *.open-meteo.com
	// + widened  capabilities.http[https://api.open-meteo.com/v1/].methods: added POST
	// + widened  capabilities.log: not granted → granted
	// + widened  limits.timeout_ms: 1000 → 5000
	// + widened  limits.log_bytes: 0 → 16384 (16 KiB)
}

func ExampleLoad() {
	_, err := contract.Load([]byte(`
module: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
name: weather
version: 1.0.0
publisher: alice@example.com
tools:
  - export: forecast
    description: Fetch the forecast for a city
    risk: extreme
    input_schema: {type: object}
capabilities:
  http:
    - {scheme: https, host: "*", methods: [GET]}
`), "weather.yaml")
	fmt.Println(err)

	var verr *contract.ValidationError
	if errors.As(err, &verr) {
		p := verr.Problems[0]
		fmt.Printf("%s at line %d, column %d\n", p.Path, p.Line, p.Col)
	}
	// Output:
	// invalid contract: 2 problems:
	// 	weather.yaml:9:11: tools[0].risk: unknown risk "extreme": want low, medium or high
	// 	weather.yaml:13:29: capabilities.http[0].host: a bare * would allow every host: name the domain, e.g. *.example.com
	// tools[0].risk at line 9, column 11
}

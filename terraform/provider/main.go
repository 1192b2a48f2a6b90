// The OmniSQL Terraform provider: control-plane objects (tenants, principals, API keys, connections,
// policies, enrollment tokens) as resources, through the control plane's admin API.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/omnisql/terraform-provider-omnisql/internal/provider"
)

var version = "dev"

func main() {
	var debug bool
	flag.BoolVar(&debug, "debug", false, "run with support for debuggers such as delve")
	flag.Parse()
	err := providerserver.Serve(context.Background(), provider.New(version), providerserver.ServeOpts{
		Address: "registry.opentofu.org/omnisql/omnisql",
		Debug:   debug,
	})
	if err != nil {
		log.Fatal(err)
	}
}

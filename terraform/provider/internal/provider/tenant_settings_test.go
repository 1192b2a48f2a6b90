package provider

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
)

func TestAccTenantOidcAndOpa(t *testing.T) {
	const tenant = `
resource "omnisql_tenant" "hooli" {
  id     = "tf-hooli"
  name   = "Hooli"
  region = "eu"
}
`
	config := func(audience, opaTimeout string) string {
		return tenant + fmt.Sprintf(`
resource "omnisql_tenant_oidc" "sso" {
  tenant          = omnisql_tenant.hooli.id
  issuer          = "https://login.hooli.example/realms/hooli"
  audience        = %q
  principal_claim = "email"
}

resource "omnisql_tenant_opa" "opa" {
  tenant     = omnisql_tenant.hooli.id
  url        = "http://opa.policy.svc:8181"
  timeout_ms = %s
}`, audience, opaTimeout)
	}
	stored := func(segment, field, want string) resource.TestCheckFunc {
		return func(*terraform.State) error {
			var got map[string]any
			if err := adminClient().call(context.Background(), http.MethodGet, "/v1/tenants/tf-hooli/"+segment, nil, &got); err != nil {
				return err
			}
			if fmt.Sprint(got[field]) != want {
				return fmt.Errorf("%s.%s is %v, want %s", segment, field, got[field], want)
			}
			return nil
		}
	}
	gone := func(*terraform.State) error {
		for _, segment := range []string{"oidc", "opa"} {
			if err := adminClient().call(context.Background(), http.MethodGet, "/v1/tenants/tf-hooli/"+segment, nil, nil); !isNotFound(err) {
				return fmt.Errorf("the tenant's %s outlived its resource: %v", segment, err)
			}
		}
		return nil
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: providers,
		Steps: []resource.TestStep{
			{Config: config("omnisql", "500"), Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("omnisql_tenant_oidc.sso", "groups_claim", "groups"),
				resource.TestCheckResourceAttr("omnisql_tenant_opa.opa", "path", "omnisql/batch"),
				resource.TestCheckResourceAttr("omnisql_tenant_opa.opa", "cache_seconds", "60"),
				stored("oidc", "principal_claim", "email"), stored("opa", "url", "http://opa.policy.svc:8181"))},
			// Changes apply in place.
			{Config: config("hooli-sql", "800"), Check: resource.ComposeAggregateTestCheckFunc(
				stored("oidc", "audience", "hooli-sql"), stored("opa", "timeout_ms", "800"))},
			{ResourceName: "omnisql_tenant_oidc.sso", ImportState: true, ImportStateId: "tf-hooli",
				ImportStateVerify: true, ImportStateVerifyIdentifierAttribute: "tenant"},
			{ResourceName: "omnisql_tenant_opa.opa", ImportState: true, ImportStateId: "tf-hooli",
				ImportStateVerify: true, ImportStateVerifyIdentifierAttribute: "tenant"},
			// The control plane refuses a plain-http issuer, saying why.
			{Config: tenant + `
resource "omnisql_tenant_oidc" "sso" {
  tenant   = omnisql_tenant.hooli.id
  issuer   = "ftp://login.hooli.example"
  audience = "omnisql"
}`, ExpectError: regexpMust(`https`)},
			// Removed from the configuration: removed from the tenant.
			{Config: tenant, Check: gone},
		},
	})
}

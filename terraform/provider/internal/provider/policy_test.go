package provider

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
)

func TestAccPolicy(t *testing.T) {
	config := func(allow string) string {
		return fmt.Sprintf(`
resource "omnisql_tenant" "umbrella" {
  id     = "tf-umbrella"
  name   = "Umbrella"
  region = "eu"
}

resource "omnisql_policy" "rows" {
  tenant = omnisql_tenant.umbrella.id
  name   = "rows"
  rego   = "package omnisql.rows\nallow := %s\n"
}`, allow)
	}
	versions := func(want int) resource.TestCheckFunc {
		return func(*terraform.State) error {
			var all []policyJSON
			if err := adminClient().call(context.Background(), http.MethodGet, "/v1/tenants/tf-umbrella/policies/rows", nil, &all); err != nil {
				return err
			}
			if len(all) != want {
				return fmt.Errorf("%d versions stored, want %d", len(all), want)
			}
			return nil
		}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: providers,
		Steps: []resource.TestStep{
			{Config: config("true"), Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("omnisql_policy.rows", "version", "1"), versions(1))},
			// A change is a new version, in place.
			{Config: config("false"), Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("omnisql_policy.rows", "version", "2"), versions(2))},
			{ResourceName: "omnisql_policy.rows", ImportState: true, ImportStateId: "tf-umbrella/rows",
				ImportStateVerify: true, ImportStateVerifyIdentifierAttribute: "name"},
			// Removing it from the configuration deletes every version.
			{Config: `
resource "omnisql_tenant" "umbrella" {
  id     = "tf-umbrella"
  name   = "Umbrella"
  region = "eu"
}`, Check: func(*terraform.State) error {
				err := adminClient().call(context.Background(), http.MethodGet, "/v1/tenants/tf-umbrella/policies/rows", nil, nil)
				if !isNotFound(err) {
					return fmt.Errorf("the policy outlived its resource: %v", err)
				}
				return nil
			}},
			// Invalid Rego is refused by the control plane with its reason.
			{Config: config("{"), ExpectError: regexpMust(`rego|Rego`)},
		},
	})
}

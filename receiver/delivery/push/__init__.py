"""Push mode: every actions payload of a product POSTed to the customer's endpoint, signed."""

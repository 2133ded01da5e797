"""The shop: orders, and the checkout workflow that handles each one."""

"""Fill a fresh Tryton 8.2 database (modules: stock) for dockline's tests.

Usage: python tryton_setup.py CONFIG DATABASE REFERENCE...

Creates a company (USD), a stocked product (100 units in the warehouse
storage), a customer with an address, and one outbound shipment
(stock.shipment.out) per REFERENCE with a one-unit outgoing move, confirmed
to `waiting`. A REFERENCE ending in ":draft" stays a draft; one ending in
":cancelled" is cancelled. Prints a JSON object {reference: shipment id}.

Runs in-process on the database through proteus (no server needed), with
the venv's python that has trytond, trytond-stock and proteus installed.
"""
import json
import sys
from decimal import Decimal

from proteus import Model, config

from trytond.modules.company.tests.tools import create_company, get_company


def main(conf, database, references):
    config.set_trytond(database=database, config_file=conf)
    create_company()
    company = get_company()

    Uom = Model.get('product.uom')
    Template = Model.get('product.template')
    Location = Model.get('stock.location')
    Party = Model.get('party.party')
    Move = Model.get('stock.move')
    Shipment = Model.get('stock.shipment.out')

    unit, = Uom.find([('name', '=', 'Unit')])
    template = Template(
        name='Widget', default_uom=unit, type='goods',
        list_price=Decimal('10'))
    template.save()
    product, = template.products

    supplier, = Location.find([('code', '=', 'SUP')])
    storage, = Location.find([('code', '=', 'STO')])
    customer_location, = Location.find([('code', '=', 'CUS')])
    warehouse, = Location.find([('code', '=', 'WH')])

    stock = Move(
        product=product, quantity=100, unit=unit,
        from_location=supplier, to_location=storage,
        unit_price=Decimal('5'), currency=company.currency,
        company=company)
    stock.save()
    stock.click('do')

    customer = Party(name='Customer')
    customer.addresses.new(street='1 Dock Road', postal_code='1000',
        city='Portville')
    customer.save()

    ids = {}
    for spec in references:
        reference, _, final = spec.partition(':')
        shipment = Shipment(
            customer=customer, warehouse=warehouse, reference=reference)
        shipment.delivery_address = customer.addresses[0]
        move = shipment.outgoing_moves.new()
        move.product = product
        move.unit = unit
        move.quantity = 1
        move.from_location = shipment.warehouse_output
        move.to_location = customer_location
        move.unit_price = Decimal('10')
        move.currency = company.currency
        shipment.save()
        if final != 'draft':
            shipment.click('wait')
        if final == 'cancelled':
            shipment.click('cancel')
        ids[reference] = shipment.id
    print(json.dumps(ids))


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
